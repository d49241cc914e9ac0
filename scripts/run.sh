#!/usr/bin/env bash
# `make run`: the two processes of the avatar on this machine, and Ctrl-C stops both.
#   signaling (the /avatar page, session tokens, the chat relay)  on 127.0.0.1:${SIGNALING_PORT:-8080}
#   runtime   (Ray Serve app: the HTTP API and every model stage) on 127.0.0.1:${RUNTIME_PORT:-8000}
# The signaling service starts first (under a second) and prints the page's URL as its first line; the
# page says "waking up the avatar..." until the runtime has loaded its models.
set -euo pipefail
cd "$(dirname "$0")/.."

runtime_port=${RUNTIME_PORT:-8000}
# A runtime key (AVATAR_SERVE__API_KEY) is one the signaling service must send too.
export SIGNALING_RUNTIME_API_KEY=${SIGNALING_RUNTIME_API_KEY:-${AVATAR_SERVE__API_KEY:-}}
signaling_port=${SIGNALING_PORT:-8080}

.venv/bin/python -m signaling --runtime-url "http://127.0.0.1:${runtime_port}" --port "${signaling_port}" &
signaling=$!
trap 'kill "$signaling" "${runtime:-}" 2>/dev/null || true; wait 2>/dev/null || true' INT TERM EXIT
sleep 0.5
.venv/bin/avatar serve --profile cpu --port "${runtime_port}" &
runtime=$!
wait -n "$signaling" "$runtime"  # either one ending ends both (the trap stops the other)
