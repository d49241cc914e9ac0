# Realtime Avatar: every entry point sets the machine up first (idempotent, skipped once done).
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
OUT := out
DEMO_EN := Hello! I am a realtime avatar. I can speak English, Mandarin and Spanish.
DEMO_ZH := 你好！我是一个实时数字人，很高兴认识你。
DEMO_ES := ¡Hola! Soy un avatar en tiempo real. Encantado de conocerte.

.PHONY: setup run serve render demo test lint bench bench-serve bench-chat bench-asr bench-realtime bench-soak bench-concurrency chat loadtest eval clean compose-env cost turn

WEB_DIST := web/dist/index.html
WEB_SOURCES := web/package.json web/package-lock.json web/index.html web/vite.config.ts web/tsconfig.json \
	$(wildcard web/src/* web/public/*)

setup: $(STAMP) $(WEB_DIST)

$(STAMP): pyproject.toml scripts/setup.sh signaling/requirements.txt infra/requirements-checkov.txt
	./scripts/setup.sh
	touch $(STAMP)

# The /avatar page, built to static files that the signaling service serves (Node 20 + npm).
$(WEB_DIST): $(WEB_SOURCES)
	cd web && npm ci --no-audit --no-fund && npm run build

# README command 1: the avatar page at http://127.0.0.1:8080/avatar/ (printed first), served by the
# signaling service, in front of the runtime (Ray Serve, cpu profile, bundled models) on :8000, which
# also prints a curl line and an `avatar chat` line. Ctrl-C stops both.
run: setup
	@./scripts/run.sh

# Only the runtime's HTTP API (no page), as the container runs it.
serve: setup
	$(BIN)/avatar serve --profile cpu

# Chat in the terminal (starts the cpu profile here unless URL names a running server); clips go to out/chat.
URL ?=
chat: setup
	$(BIN)/avatar chat $(if $(URL),--url $(URL),)

# One MP4 from the command line, no server.
render: setup
	$(BIN)/avatar render --text "$(DEMO_EN)" --lang en -o $(OUT)/quickstart.mp4

demo: setup
	$(BIN)/avatar render --text "$(DEMO_EN)" --lang en -o $(OUT)/demo_en.mp4
	$(BIN)/avatar render --text "$(DEMO_ZH)" --lang zh -o $(OUT)/demo_zh.mp4
	$(BIN)/avatar render --text "$(DEMO_ES)" --lang es -o $(OUT)/demo_es.mp4

# README command 2 (and .ci/run): lint (Python, then the page's eslint + tsc), then the whole CPU test
# suite, the real-browser tests in Debian's Chromium included (installed with apt when missing).
test: setup
	./scripts/setup-browser.sh
	$(BIN)/ruff check .
	cd web && npm run lint
	AVATAR_REQUIRE_BROWSER=1 $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.serving
	$(BIN)/python -m benchmarks.llm
	$(BIN)/python -m benchmarks.chat
	$(BIN)/python -m benchmarks.realtime

# Chat through the served graph: first-clip latency, replies per bundled LLM, memory over 50 turns.
bench-chat: setup
	$(BIN)/python -m benchmarks.chat

# One voice-call turn's whisper pass: language given, detected by stock faster-whisper, detected here.
bench-asr: setup
	$(BIN)/python -m benchmarks.asr

# A local TURN relay for relay-only calls (README "TURN relay"): Debian's coturn with the repo's config on
# 127.0.0.1:3478 (TURN_PORT), loopback peers allowed (never in production); TURN_SECRET is the shared secret.
turn: setup
	$(BIN)/python -m realtime_avatar.rtc.coturn

# Voice calls (aiortc client, 21 turns over en/zh/es, 3 barge-ins): latency, barge-in, A/V lag, fps
# measured on the received media; out/bench/realtime.{md,json}. URL=http://... to call a running runtime.
bench-realtime: setup
	$(BIN)/python -m benchmarks.realtime $(if $(URL),--url $(URL),)

# One long call (MINUTES, default 30): RSS every minute, A/V offset over time, fps, stalls > 200 ms;
# out/bench/realtime_soak.{md,json}. URL=http://... to call a running runtime.
MINUTES ?= 30
bench-soak: setup
	$(BIN)/python -m benchmarks.realtime_soak --minutes $(MINUTES) $(if $(URL),--url $(URL),)

# Calls at once (N listening + 1 speaking; all speaking in turns): fps per call, p95 first word;
# out/bench/realtime_concurrency.{md,json}. Load-sensitive: run it on a quiet machine.
bench-concurrency: setup
	$(BIN)/python -m benchmarks.realtime_concurrency $(if $(URL),--url $(URL),)

# Serve overhead, time to first fragment, and locust at 1/2/4 users (starts its own cpu server).
bench-serve: setup
	$(BIN)/python -m benchmarks.serving

# Locust, headless, CSV in out/loadtest/ (against HOST, or a cpu server it starts for the run).
HOST ?= http://127.0.0.1:8000
USERS ?= 4
DURATION ?= 60s
loadtest: setup
	$(BIN)/python -m loadtest.run --host $(HOST) --users $(USERS) --duration $(DURATION) --csv $(OUT)/loadtest/locust

# The five scenarios x 3 repeats, measured on the MP4s: JSON per run + summary in evaluator/outputs/.
eval: setup
	$(BIN)/python -m evaluator run --scenarios all --repeats 3

# docker compose's secrets: a .env (gitignored) with a random TURN secret and session signing key, once.
compose-env:
	@[ -f .env ] || { printf 'TURN_SECRET=%s\nSIGNALING_SECRET=%s\n' \
	  "$$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')" \
	  "$$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')" > .env && chmod 600 .env && echo "wrote .env"; }

# A month on Cloud Run for 50 / 200 / 1000 ten-minute sessions (README's cost table).
cost: setup
	$(BIN)/avatar cost --table 50 200 1000

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
