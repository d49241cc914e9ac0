"""``python -m benchmarks.chat``: chat through the served graph (cpu profile, bundled models).

1. Latency, over ``--turns`` turns spread over en / es / zh sessions: from ``POST /v1/chat`` to the
   first text delta, to the first byte of the first clip, and to that clip's last byte (its whole
   NDJSON line); p50 / p95, all turns and per language. Measured by the client on raw bytes.
2. Replies, per bundled LLM candidate: 10 questions per language (benchmarks.llm's questions) in one
   session per language: the share of replies in the session's language (lingua on the spoken text),
   and the share that whisper (the bundled base model, on the clips' own audio) understands: WER
   <= 0.25 (en, es) / CER <= 0.30 (zh) against the spoken text, with the median error.
3. Cancellation: a client that closes the connection mid-reply; how long until no stage has a request
   in flight (``/readyz``).
4. Memory: RSS of every process of the app (Ray's and Serve's) with the LLM loaded, before and after
   ``--memory-turns`` sequential turns (after a warm-up).

Prints Markdown and writes it with the raw numbers to ``out/bench/chat.{md,json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from benchmarks.__main__ import machine
from benchmarks.llm import QUESTIONS
from engines.asr.metrics import error_rate
from engines.media.mp4 import read_audio
from engines.tts.text import LanguageDetector
from graphs.launch import free_port, resolve, running, wait_ready
from realtime_avatar.chat_client import ChatClient

CANDIDATES = ("smollm2-135m", "gemma3-270m")
UNDERSTOOD = {"en": 0.25, "es": 0.25, "zh": 0.30}
CLIP_MARK = b'{"type":"clip"'


@contextlib.contextmanager
def served(model: str) -> Iterator[str]:
    config = resolve("cpu")
    config["http_options"]["port"] = free_port()
    config["applications"][0]["args"]["log_level"] = "WARNING"
    previous = os.environ.get("AVATAR_LLM__OPTIONS__MODEL")
    os.environ["AVATAR_LLM__OPTIONS__MODEL"] = model  # resolved in this driver, handed to the replicas
    try:
        with running(config) as base:
            wait_ready(base)
            yield base
    finally:
        if previous is None:
            os.environ.pop("AVATAR_LLM__OPTIONS__MODEL", None)
        else:
            os.environ["AVATAR_LLM__OPTIONS__MODEL"] = previous


def timed_turn(http: httpx.Client, session_id: str, text: str) -> dict[str, Any]:
    """One turn on raw bytes: when the first text, the first clip byte and that clip's end arrived."""
    marks: dict[str, float] = {}
    buffer = bytearray()
    started = time.perf_counter()
    with http.stream("POST", "/v1/chat", json={"session_id": session_id, "text": text}) as response:
        response.raise_for_status()
        for data in response.iter_raw():
            now = time.perf_counter() - started
            offset = len(buffer)
            buffer += data
            if "text" not in marks and b'"type":"text"' in buffer:
                marks["text"] = now
            if "clip" not in marks and buffer.find(CLIP_MARK, max(0, offset - len(CLIP_MARK))) >= 0:
                marks["clip"] = now
            clip_at = buffer.find(CLIP_MARK)
            if clip_at >= 0 and "clip_end" not in marks and buffer.find(b"\n", clip_at) >= 0:
                marks["clip_end"] = now
    events = [json.loads(line) for line in bytes(buffer).splitlines() if line.strip()]
    return {"first_text_s": marks.get("text"), "first_clip_s": marks.get("clip"),
            "first_clip_end_s": marks.get("clip_end"), "total_s": time.perf_counter() - started,
            "server_ms": events[-1].get("timings_ms", {}), "end": events[-1]["type"],
            "clips": sum(e["type"] == "clip" for e in events), "text": events[-1].get("text", "")}


def _pct(values: list[float], q: float) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return round(float(np.percentile(values, q)) * 1000)


def bench_latency(base: str, turns: int, interleave: bool = False) -> dict[str, Any]:
    languages = ("en", "es", "zh")
    # One visitor at a time: a session's turns follow each other (en, then es, then zh), so the LLM's
    # KV cache holds the conversation so far. ``interleave`` alternates three sessions turn by turn
    # instead, as three visitors at once would, and every turn re-reads its whole prompt.
    order = [languages[i % 3] for i in range(turns)] if interleave else sorted(
        (languages[i % 3] for i in range(turns)), key=languages.index)
    seen = dict.fromkeys(languages, 0)
    plan = []
    for lang in order:
        plan.append((lang, QUESTIONS[lang][seen[lang] % len(QUESTIONS[lang])]))
        seen[lang] += 1
    rows: list[dict[str, Any]] = []
    with httpx.Client(base_url=base, timeout=120) as http, ChatClient(base) as chat:
        sessions = {lang: chat.create_session(lang)["session_id"] for lang in languages}
        chat.send(sessions["en"], "Hello!")  # one warm-up turn: first calls load dictionaries and sessions
        for lang, question in plan:
            row = timed_turn(http, sessions[lang], question)
            rows.append({"language": lang, "question": question, **row})
            print(f"  {lang} first clip {row['first_clip_s']:.2f} s  {question}", flush=True)
    summary: dict[str, Any] = {}
    groups = [("all", rows), *((lang, [r for r in rows if r["language"] == lang]) for lang in languages)]
    for name, subset in groups:
        summary[name] = {
            "turns": len(subset),
            **{f"{key}_p{q}_ms": _pct([r[f"{key}_s"] for r in subset], q)
               for key in ("first_text", "first_clip", "first_clip_end", "total") for q in (50, 95)},
        }
    return {"summary": summary, "turns": rows, "interleaved": interleave}


def bench_replies(base: str, asr: Any, detector: LanguageDetector, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with ChatClient(base) as chat:
        for language in ("en", "es", "zh"):
            session = chat.create_session(language)["session_id"]
            replies = []
            for question in QUESTIONS[language]:
                reply = chat.send(session, question)
                spoken = reply.text
                detected, _ = detector.detect(spoken) if spoken else (None, 0.0)
                heard, rate = "", 1.0
                if reply.clips:
                    paths = []
                    for i, data in enumerate(reply.clips):
                        path = workdir / f"{language}_{len(replies)}_{i}.mp4"
                        path.write_bytes(data)
                        paths.append(path)
                    pcm = np.concatenate([read_audio(p)[0] for p in paths])
                    heard = asr.transcribe(pcm, read_audio(paths[0])[1], language).text
                    rate = error_rate(spoken, heard, language)
                replies.append({"question": question, "spoken": spoken, "detected": detected,
                                "heard": heard, "error_rate": round(rate, 3)})
            chat.end_session(session)
            results[language] = {
                "language_match": sum(r["detected"] == language for r in replies) / len(replies),
                "understood": sum(r["error_rate"] <= UNDERSTOOD[language] for r in replies) / len(replies),
                "median_error_rate": round(statistics.median(r["error_rate"] for r in replies), 3),
                "replies": replies,
            }
    return results


def _in_flight(http: httpx.Client) -> int:
    stages = http.get("/readyz").json()["stages"]
    return sum(int(stage.get("in_flight", 0)) for stage in stages.values())


def bench_cancellation(base: str, repeats: int) -> dict[str, Any]:
    """Close the connection mid-reply (after the first text delta, while the LLM writes and the first
    sentence renders); time until /readyz reports no request in flight in any stage."""
    freed: list[float] = []
    with httpx.Client(base_url=base, timeout=120) as http, ChatClient(base) as chat:
        session = chat.create_session("en")["session_id"]
        body = {"session_id": session, "text": "Tell me a long story about your work and your city."}
        for _ in range(repeats):
            with http.stream("POST", "/v1/chat", json=body) as response:
                for line in response.iter_lines():
                    if '"type":"text"' in line:
                        break
            left = time.perf_counter()
            while _in_flight(http):
                time.sleep(0.005)
            freed.append(time.perf_counter() - left)
    return {"repeats": repeats, "freed_p50_ms": _pct(freed, 50), "freed_p95_ms": _pct(freed, 95),
            "freed_max_ms": round(max(freed) * 1000)}


def app_rss_mb() -> dict[str, float]:
    """RSS per process of the app: Ray's own processes and every Serve replica, by name."""
    found: dict[str, float] = {}
    for proc in psutil.process_iter(["name", "cmdline", "memory_info"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "ray::" not in cmdline and not any(k in cmdline for k in ("raylet", "gcs_server")):
            continue
        # A Ray actor's title names the method it is in ("ray::ServeController.listen_for_change").
        first = cmdline.split()[0]
        name = first.split(".")[0] if first.startswith("ray::") else Path(first).name
        found[name] = found.get(name, 0.0) + proc.info["memory_info"].rss / 2**20
    return {k: round(v, 1) for k, v in sorted(found.items())}


def bench_memory(base: str, turns: int) -> dict[str, Any]:
    with ChatClient(base) as chat:
        session = chat.create_session("en")["session_id"]
        for _ in range(3):
            chat.send(session, "Hello again!")
        before = app_rss_mb()
        questions = [q for lang in ("en", "es", "zh") for q in QUESTIONS[lang]]
        halfway: dict[str, float] = {}
        for i in range(turns):
            if i and i % 20 == 0:  # sessions have a turn cap; a visitor would start a new one
                chat.end_session(session)
                session = chat.create_session("auto")["session_id"]
            chat.send(session, questions[i % len(questions)])
            if i + 1 == turns // 2:
                halfway = app_rss_mb()
        after = app_rss_mb()
    growth = {k: round(after.get(k, 0.0) - v, 1) for k, v in before.items()}
    return {"before_mb": before, "halfway_mb": halfway, "after_mb": after, "growth_mb": growth,
            "total_before_mb": round(sum(before.values())),
            "total_halfway_mb": round(sum(halfway.values())) if halfway else None,
            "total_after_mb": round(sum(after.values())), "turns": turns}


def markdown(machine_line: str, result: dict[str, Any]) -> str:
    lines = [f"Machine: {machine_line}", "", "| turns | first text p50 / p95 | first clip byte p50 / p95 | "
             "first clip end p50 / p95 | reply total p50 |", "|---|---|---|---|---|"]
    for name, row in result["latency"]["summary"].items():
        lines.append(f"| {name} ({row['turns']}) | {row['first_text_p50_ms']} / {row['first_text_p95_ms']} ms"
                     f" | {row['first_clip_p50_ms']} / {row['first_clip_p95_ms']} ms | "
                     f"{row['first_clip_end_p50_ms']} / {row['first_clip_end_p95_ms']} ms | "
                     f"{row['total_p50_ms']} ms |")
    lines += ["", "| LLM | language | reply in that language | understood by whisper | median WER/CER |",
              "|---|---|---|---|---|"]
    for model, per_language in result["replies"].items():
        for language, row in per_language.items():
            lines.append(f"| {model} | {language} | {row['language_match']:.0%} | {row['understood']:.0%} | "
                         f"{row['median_error_rate']:.2f} |")
    cancel = result.get("cancellation")
    if cancel:
        p50, p95, worst = cancel["freed_p50_ms"], cancel["freed_p95_ms"], cancel["freed_max_ms"]
        lines += ["", "Cancellation (client closes mid-reply; until no stage has a request in flight, polled "
                  f"through /readyz): p50 {p50} ms, p95 {p95} ms, max {worst} ms, {cancel['repeats']} runs"]
    memory = result.get("memory")
    if memory:
        lines += ["", f"Memory (RSS, every process of the app): {memory['total_before_mb']} MB before, "
                  f"{memory['total_halfway_mb']} MB halfway and {memory['total_after_mb']} MB after "
                  f"{memory['turns']} sequential turns; growth per process: "
                  + ", ".join(f"{k} {v:+.1f}" for k, v in memory["growth_mb"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--memory-turns", type=int, default=50)
    parser.add_argument("--models", default=",".join(CANDIDATES), help="LLM candidates for the reply part")
    parser.add_argument("--latency-only", action="store_true", help="only part 1 (e.g. to compare settings)")
    parser.add_argument("--memory-only", action="store_true", help="only part 4")
    parser.add_argument("--interleave", action="store_true",
                        help="alternate the three sessions turn by turn (three visitors at once)")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args()
    from engines.asr.whisper import WhisperASR

    asr = WhisperASR()
    asr.load()
    detector = LanguageDetector()
    result: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "replies": {}}
    models = [m for m in args.models.split(",") if m]
    with tempfile.TemporaryDirectory() as tmp:
        for i, model in enumerate(models):
            print(f"serving with LLM {model}...", flush=True)
            with served(model) as base:
                if i == 0:
                    result["machine"] = machine()
                    if not args.memory_only:
                        print("latency...", flush=True)
                        result["latency"] = bench_latency(base, args.turns, args.interleave)
                    if args.latency_only:
                        break
                    if args.memory_only:
                        result["memory"] = bench_memory(base, args.memory_turns)
                        result["latency"] = {"summary": {}}
                        break
                    print("cancellation...", flush=True)
                    result["cancellation"] = bench_cancellation(base, 10)
                    print("memory...", flush=True)
                    result["memory"] = bench_memory(base, args.memory_turns)
                print("replies...", flush=True)
                result["replies"][model] = bench_replies(base, asr, detector, Path(tmp))
    text = markdown(result["machine"], result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chat.md").write_text(text)
    (args.out / "chat.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
