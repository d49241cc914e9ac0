"""``python -m benchmarks.realtime_concurrency``: how many voice calls at once the runtime keeps smooth.

Two shapes, each at several sizes, every call a headless aiortc caller (the harness's):

- *N listening + 1 speaking*: N calls connected and silent (their microphones send the noise floor),
  one call asking ``--turns`` questions in a row (spoken by the runtime's TTS, answered, a short gap);
- *all speaking in turns*: M calls asking in round robin, one question at a time across the calls.

Per size, on what each call received (``realtime_avatar.rtc.longcall``): delivered fps while the avatar
spoke and while it listened (the idle loop goes out at ``render.fps / idle_frame_stride`` = 12.5),
stalls over 200 ms, and first-word latency (end of the user's speech -> first reply audio) p50 / p95
over the speaking turns. Targets (issue 12): 25 fps and p95 first word <= 2.5 s, with >= 4 listening +
1 speaking. The load average is recorded before and after each size: the numbers are load-sensitive.

Starts the cpu profile here (``realtime.max_calls`` raised to the largest size) unless ``--url`` names
a running runtime. Prints Markdown and writes it with every raw number to
``out/bench/realtime_concurrency.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.__main__ import machine
from benchmarks.llm import QUESTIONS
from benchmarks.realtime_soak import load, server_env
from realtime_avatar.rtc import longcall, protocol
from realtime_avatar.rtc.client import RealtimeCall
from realtime_avatar.rtc.harness import Line, Utterance, serve_cpu, speak_lines

FPS_TARGET = 25.0
LISTENING_NOMINAL = 12.5
FIRST_WORD_P95_S = 2.5


async def _ask(call: RealtimeCall, u: Utterance, gap_s: float) -> None:
    sent = await call.say(u.pcm, u.sample_rate, label=str(len(call.recording.utterances) + 1),
                          language=u.line.language, text=u.line.text)
    await call.wait_event(protocol.IDLE, after=sent.speech_end_at, timeout_s=120)
    await asyncio.sleep(gap_s)


def _call_result(call: RealtimeCall, role: str) -> dict[str, Any]:
    recording = call.recording
    rows = longcall.timeline(recording, window_s=10.0)
    words = longcall.first_words(recording) if recording.utterances else []
    return {"role": role, "summary": longcall.summary(recording, rows), "first_word_s": words}


async def listening_plus_one(base: str, listeners: int, spoken: list[Utterance], turns: int,
                             gap_s: float) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        quiet = [await stack.enter_async_context(RealtimeCall(base, "en", keep_video=False))
                 for _ in range(listeners)]
        talker = await stack.enter_async_context(RealtimeCall(base, "en", keep_video=False))
        await asyncio.sleep(3.0)
        for k in range(turns):
            await _ask(talker, spoken[k % len(spoken)], gap_s)
    return {"shape": "listening+1", "listening": listeners, "calls": listeners + 1,
            "results": [_call_result(c, "listening") for c in quiet] + [_call_result(talker, "speaking")]}


async def all_speaking(base: str, calls: int, spoken: list[Utterance], rounds: int,
                       gap_s: float) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        talkers = [await stack.enter_async_context(RealtimeCall(base, "en", keep_video=False))
                   for _ in range(calls)]
        await asyncio.sleep(3.0)
        for r in range(rounds):
            for i, talker in enumerate(talkers):
                await _ask(talker, spoken[(r * calls + i) % len(spoken)], gap_s)
    return {"shape": "all speaking in turns", "listening": 0, "calls": calls,
            "results": [_call_result(c, "speaking") for c in talkers]}


def judge(size: dict[str, Any]) -> dict[str, Any]:
    words = [w for r in size["results"] for w in r["first_word_s"] if w is not None]
    asked = sum(len(r["first_word_s"]) for r in size["results"])
    speaking = [r["summary"]["fps_speaking"] for r in size["results"] if r["role"] == "speaking"]
    listening = [r["summary"]["fps_listening"] for r in size["results"]]
    speaking = [f for f in speaking if f is not None]
    listening = [f for f in listening if f is not None]
    p95 = round(float(np.percentile(words, 95)), 2) if words else None
    verdict = {
        "first_word_p50_s": round(float(np.percentile(words, 50)), 2) if words else None,
        "first_word_p95_s": p95, "answered": f"{len(words)}/{asked}",
        "fps_speaking_min": min(speaking) if speaking else None,
        "fps_listening_min": min(listening) if listening else None,
        "stalls": sum(r["summary"]["stalls_over_200ms"] for r in size["results"]),
    }
    verdict["fps_ok"] = bool(speaking) and min(speaking) >= FPS_TARGET - 1 and (
        not listening or min(listening) >= LISTENING_NOMINAL - 0.5)
    verdict["latency_ok"] = p95 is not None and p95 <= FIRST_WORD_P95_S and len(words) == asked
    return verdict


def markdown(result: dict[str, Any]) -> str:
    out = [f"## Concurrent calls ({result['date']})", "", f"{result['machine']}; {result['runtime']}", "",
           "| shape | calls | load before -> after | fps speaking (min) | fps listening (min) "
           "| stalls > 200 ms | first word p50 / p95 | answered | 25 fps | p95 <= 2.5 s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for size in result["sizes"]:
        v = size["verdict"]
        out.append(f"| {size['shape']} | {size['calls']} | {size['load_before']} -> {size['load_after']} | "
                   f"{v['fps_speaking_min']} | {v['fps_listening_min']} | {v['stalls']} | "
                   f"{v['first_word_p50_s']} / {v['first_word_p95_s']} s | {v['answered']} | "
                   f"{'yes' if v['fps_ok'] else 'no'} | {'yes' if v['latency_ok'] else 'no'} |")
    return "\n".join(out) + "\n"


async def run(base: str, listening: list[int], speaking: list[int], turns: int, rounds: int,
              gap_s: float) -> list[dict[str, Any]]:
    lines = [Line(q, "en") for q in QUESTIONS["en"][:6]]
    spoken = speak_lines(base, lines)
    print("warm-up call...", flush=True)
    async with RealtimeCall(base, "en", keep_video=False) as warm:
        await _ask(warm, spoken[0], 0.5)
    sizes = []
    for n in listening:
        print(f"{n} listening + 1 speaking...", flush=True)
        before = load()
        size = await listening_plus_one(base, n, spoken, turns, gap_s)
        size |= {"load_before": before, "load_after": load()}
        size["verdict"] = judge(size)
        print(f"  {size['verdict']}", flush=True)
        sizes.append(size)
        await asyncio.sleep(3.0)
    for m in speaking:
        print(f"{m} speaking in turns...", flush=True)
        before = load()
        size = await all_speaking(base, m, spoken, rounds, gap_s)
        size |= {"load_before": before, "load_after": load()}
        size["verdict"] = judge(size)
        print(f"  {size['verdict']}", flush=True)
        sizes.append(size)
        await asyncio.sleep(3.0)
    return sizes


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running runtime (default: start the cpu profile here)")
    parser.add_argument("--listening", default="1,2,4", help="listening calls beside the speaking one")
    parser.add_argument("--speaking", default="2,3", help="calls all speaking in turns")
    parser.add_argument("--turns", type=int, default=3, help="questions of the speaking call")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of questions when all speak")
    parser.add_argument("--gap", type=float, default=2.0, help="silence after each reply, s")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args(argv)
    listening, speaking = _sizes(args.listening), _sizes(args.speaking)
    most = max([n + 1 for n in listening] + speaking + [1])
    result: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                              "turns": args.turns, "rounds": args.rounds, "gap_s": args.gap}
    if args.url:
        result["runtime"] = args.url
        result["sizes"] = asyncio.run(run(args.url.rstrip("/"), listening, speaking, args.turns, args.rounds,
                                          args.gap))
    else:
        print("starting the runtime (cpu profile)...", flush=True)
        os.environ.update(server_env(30, calls=most))
        with serve_cpu() as base:
            result["runtime"] = "cpu profile, started here"
            result["sizes"] = asyncio.run(run(base, listening, speaking, args.turns, args.rounds, args.gap))
    text = markdown(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "realtime_concurrency.md").write_text(text)
    (args.out / "realtime_concurrency.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
