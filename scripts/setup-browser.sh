#!/usr/bin/env bash
# What the browser tests need beyond .venv: Debian's Chromium and ChromeDriver (Playwright's own browser
# download is unreachable here), and a CJK font so Mandarin is legible in the screenshots.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null && fc-list 2>/dev/null | grep -qi wqy; then
  exit 0
fi
echo "setup: installing chromium, chromium-driver and fonts-wqy-microhei with apt (browser tests)"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver fonts-wqy-microhei
