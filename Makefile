# Realtime Avatar: every entry point sets the machine up first (idempotent, skipped once done).
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
OUT := out
DEMO_EN := Hello! I am a realtime avatar. I can speak English, Mandarin and Spanish.
DEMO_ZH := 你好！我是一个实时数字人，很高兴认识你。
DEMO_ES := ¡Hola! Soy un avatar en tiempo real. Encantado de conocerte.

.PHONY: setup run demo test lint bench eval clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	./scripts/setup.sh
	touch $(STAMP)

# README command 1: render a talking-head MP4 with the bundled CPU models.
run: setup
	$(BIN)/avatar render --text "$(DEMO_EN)" --lang en -o $(OUT)/quickstart.mp4

demo: setup
	$(BIN)/avatar render --text "$(DEMO_EN)" --lang en -o $(OUT)/demo_en.mp4
	$(BIN)/avatar render --text "$(DEMO_ZH)" --lang zh -o $(OUT)/demo_zh.mp4
	$(BIN)/avatar render --text "$(DEMO_ES)" --lang es -o $(OUT)/demo_es.mp4

# README command 2 (and .ci/run): lint, then the whole CPU test suite.
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m benchmarks

# The five scenarios x 3 repeats, measured on the MP4s: JSON per run + summary in evaluator/outputs/.
eval: setup
	$(BIN)/python -m evaluator run --scenarios all --repeats 3

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
