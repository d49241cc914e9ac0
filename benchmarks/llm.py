"""``python -m benchmarks.llm``: the bundled LLM candidates on this machine, 10 questions per language.

Each question is a fresh conversation (persona system prompt + one user message), asked in turn, so
after the first the persona comes from the KV cache as it would in the served avatar. Per model and
language: median time to the first text delta; median decode speed (tokens sampled after the first
delta / time after it, replies of 8+ tokens); the share of replies whose detected language
(engines.tts.text's lingua detector) is the question's. Prints Markdown and writes it with every reply
to ``out/bench/llm.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.__main__ import machine
from engines.llm.bundled import BUNDLED
from engines.llm.llama_cpp import LlamaCppLLM
from engines.tts.text import LanguageDetector

PERSONA = ("You are Alex, a friendly software engineer. Answer in the language of the user's message, "
           "in 1-3 short sentences.")
QUESTIONS: dict[str, list[str]] = {
    "en": [
        "What do you do for a living?",
        "What is your favorite programming language?",
        "How do you usually spend your weekends?",
        "Can you recommend a good book?",
        "What is the best way to learn to code?",
        "Do you prefer coffee or tea?",
        "What was the hardest bug you ever fixed?",
        "Where would you like to travel next?",
        "How do you stay focused while working?",
        "What do you think about remote work?",
    ],
    "zh": [
        "你是做什么工作的？",
        "你最喜欢哪种编程语言？",
        "你周末一般做什么？",
        "你能推荐一本好书吗？",
        "学习编程最好的方法是什么？",
        "你喜欢喝咖啡还是喝茶？",
        "你遇到过最难的问题是什么？",
        "你下一次想去哪里旅行？",
        "工作的时候你怎么保持专注？",
        "你觉得远程工作怎么样？",
    ],
    "es": [
        "¿A qué te dedicas?",
        "¿Cuál es tu lenguaje de programación favorito?",
        "¿Qué sueles hacer los fines de semana?",
        "¿Me puedes recomendar un buen libro?",
        "¿Cuál es la mejor manera de aprender a programar?",
        "¿Prefieres café o té?",
        "¿Cuál fue el error más difícil que has arreglado?",
        "¿Adónde te gustaría viajar la próxima vez?",
        "¿Cómo te mantienes concentrado cuando trabajas?",
        "¿Qué opinas del trabajo remoto?",
    ],
}


def bench_model(name: str, max_tokens: int, seed: int, chat_format: str | None = None) -> dict[str, Any]:
    engine = LlamaCppLLM(name, max_tokens=max_tokens, seed=seed, chat_format=chat_format)
    engine.load()
    detector = LanguageDetector()
    list(engine.stream_chat([{"role": "user", "content": "Hi"}], max_tokens=4))  # first-call costs
    result: dict[str, Any] = {"model": name, "chat_format": engine.chat_format or engine.llama.chat_format,
                              "sampling": engine.defaults, "languages": {}}
    for language, questions in QUESTIONS.items():
        replies = []
        for question in questions:
            messages = [{"role": "system", "content": PERSONA}, {"role": "user", "content": question}]
            text = "".join(engine.stream_chat(messages, seed=seed))
            stats = engine.last_stats
            decode_s = stats.total_s - stats.first_delta_s
            detected, confidence = detector.detect(text) if text.strip() else (None, 0.0)
            replies.append({
                "question": question, "reply": text, "detected": detected, "confidence": round(confidence, 2),
                "ttft_s": round(stats.first_delta_s, 3), "prompt_tokens": stats.prompt_tokens,
                "reused_tokens": stats.reused_tokens, "completion_tokens": stats.completion_tokens,
                "tokens_per_s": round((stats.completion_tokens - 1) / decode_s, 1) if decode_s > 0 else None,
            })
        # A reply of a few tokens times mostly the stop-sequence check and the stream's end, not decoding.
        speeds = [r["tokens_per_s"] for r in replies if r["tokens_per_s"] and r["completion_tokens"] >= 8]
        result["languages"][language] = {
            "ttft_median_s": statistics.median(r["ttft_s"] for r in replies),
            "tokens_per_s_median": statistics.median(speeds) if speeds else 0.0,
            "language_match": sum(r["detected"] == language for r in replies) / len(replies),
            "replies": replies,
        }
        summary = result["languages"][language]
        print(f"  {name} {language}: ttft {summary['ttft_median_s']:.3f} s, "
              f"{summary['tokens_per_s_median']:.0f} tok/s, match {summary['language_match']:.0%}",
              flush=True)
    return result


def markdown(machine_line: str, results: list[dict[str, Any]]) -> str:
    sampling = ", ".join(f"{k} {v}" for k, v in results[0]["sampling"].items()) if results else ""
    lines = [
        f"Machine: {machine_line}. Date: {datetime.now(UTC):%Y-%m-%d}. llama-cpp-python, 2 threads, "
        f"sampling {sampling}; 10 questions per language, each a fresh conversation (the persona prompt "
        "comes from the KV cache after the first).",
        "",
        "| model | chat format | lang | TTFT median s | tokens/s median | language match |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for language, row in result["languages"].items():
            lines.append(f"| {result['model']} | {result['chat_format']} | {language} "
                         f"| {row['ttft_median_s']:.3f} | {row['tokens_per_s_median']:.0f} "
                         f"| {row['language_match']:.0%} |")
    lines += ["", "First reply per language:", ""]
    for result in results:
        for language, row in result["languages"].items():
            first = row["replies"][0]
            reply = first["reply"].strip().replace("\n", " ")
            lines.append(f"- {result['model']} / {language}: {first['question']} -> {reply}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.llm", description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(BUNDLED), choices=BUNDLED)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chat-format", help="override every model's chat format (e.g. gemma, transcript)")
    parser.add_argument("--out", type=Path, default=Path("out") / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    machine_line = machine()
    print(f"machine: {machine_line}", flush=True)
    load_before = os.getloadavg()[0]  # others' processes on a shared box show up as noise; record them
    results = [bench_model(name, args.max_tokens, args.seed, args.chat_format) for name in args.models]
    machine_line += f", load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after"
    table = markdown(machine_line, results)
    (args.out / "llm.json").write_text(json.dumps(
        {"machine": machine_line, "max_tokens": args.max_tokens, "seed": args.seed, "persona": PERSONA,
         "results": results}, indent=2, ensure_ascii=False))
    print()
    print(table)


if __name__ == "__main__":
    main()
