#!/usr/bin/env bash
# What the browser and relay tests need beyond .venv: Debian's Chromium and ChromeDriver (Playwright's own
# browser download is unreachable here), a CJK font so Mandarin is legible in the screenshots, and coturn
# (the TURN relay the relay-only call tests start on loopback).
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v turnserver >/dev/null \
  && fc-list 2>/dev/null | grep -qi wqy; then
  exit 0
fi
echo "setup: installing chromium, chromium-driver, fonts-wqy-microhei and coturn with apt (browser and relay tests)"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver fonts-wqy-microhei coturn
