"""``python -m benchmarks.realtime_soak --minutes 30``: one long voice call, measured on what arrived.

One call (aiortc client, the harness's caller) with a turn every ``--turn-every`` seconds (questions
spoken by the runtime's TTS in a female reference voice, answered, then silence): the realtime replica's
RSS every minute (``/readyz``), and per ``--window`` of the call the delivered fps (speaking /
listening), the A/V offset (``realtime_avatar.rtc.longcall``: video minus audio delivery, on the one
media clock's stamps), the longest gap per track and the stalls over 200 ms. Targets (issue 12): RSS
flat within 5%, |A/V offset| <= 40 ms throughout, no stall over 200 ms.

Starts the cpu profile here (call limits raised to fit the run) unless ``--url`` names a running
runtime (its ``realtime.max_call_minutes`` must exceed ``--minutes``). Prints Markdown and writes it
with every raw number to ``out/bench/realtime_soak.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.__main__ import machine
from benchmarks.llm import QUESTIONS
from realtime_avatar.rtc import longcall, protocol
from realtime_avatar.rtc.client import RealtimeCall
from realtime_avatar.rtc.harness import Line, serve_cpu, speak_lines

RSS_FLAT_PCT = 5.0
AV_MAX_MS = 40.0


def server_env(minutes: float, calls: int = 2) -> dict[str, str]:
    """The runtime's settings a long (or crowded) benchmark needs: calls long enough, a listener that
    is not idled out, greedy two-sentence replies (the same answers every run)."""
    return {"AVATAR_REALTIME__MAX_CALL_MINUTES": str(minutes + 5), "AVATAR_REALTIME__IDLE_TIMEOUT_S": "3600",
            "AVATAR_REALTIME__MAX_CALLS": str(calls), "AVATAR_CHAT__TEMPERATURE": "0",
            "AVATAR_CHAT__REPLY_MAX_SENTENCES": "2"}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


async def soak(base: str, minutes: float, turn_every_s: float, window_s: float) -> dict[str, Any]:
    lines = [Line(q, "en") for q in QUESTIONS["en"][:4]]
    spoken = speak_lines(base, lines)
    rss = longcall.RssSampler(base, every_s=60)
    async with RealtimeCall(base, "en", keep_video=False) as call:
        await call.wait_event(protocol.CALL_STARTED, timeout_s=30)
        await asyncio.sleep(2.0)
        rss.start()
        started = time.perf_counter()
        turns = await longcall.talk_for(call, spoken, minutes * 60, gap_s=turn_every_s)
        await rss.sample()
        await rss.stop()
        wall = time.perf_counter() - started
    recording = call.recording
    rows = longcall.timeline(recording, window_s)
    origin = rss.samples[0][0] if rss.samples else 0.0
    first_words = [w for w in longcall.first_words(recording) if w is not None]
    return {"turns": turns, "wall_s": round(wall, 1), "summary": longcall.summary(recording, rows),
            "rss": longcall.rss_drift(rss.samples[1:]),  # from minute 1: the first reply's one-off costs
            "rss_samples": [{"t_min": round((t - origin) / 60, 2), "rss_mb": mb} for t, mb in rss.samples],
            "first_word_s": {"p50": round(float(np.percentile(first_words, 50)), 2) if first_words else None,
                             "p95": round(float(np.percentile(first_words, 95)), 2) if first_words else None,
                             "n": len(first_words)},
            "windows": rows}


def markdown(result: dict[str, Any]) -> str:
    s, rss = result["summary"], result["rss"]
    av = s["av_offset_abs_ms"]
    rss_ok = rss.get("spread_pct") is not None and rss["spread_pct"] <= RSS_FLAT_PCT
    av_ok = av["max"] is not None and av["max"] <= AV_MAX_MS
    out = [f"## Long call: {result['minutes']:g} min ({result['date']})", "",
           f"{result['machine']}; {result['runtime']}; load before / after: {result['load_before']} / "
           f"{result['load_after']}", "",
           "| measure | value | target |", "|---|---|---|",
           f"| turns | {result['turns']} (one every ~{result['turn_every_s']:g} s after the reply) | |",
           f"| RSS (realtime replica), min 1 -> end | {rss.get('first_mb')} -> {rss.get('last_mb')} MB "
           f"(range {rss.get('min_mb')}-{rss.get('max_mb')}, spread {rss.get('spread_pct')}%, "
           f"{rss.get('samples')} samples) | flat within {RSS_FLAT_PCT:g}%: "
           f"{'met' if rss_ok else 'missed'} |",
           f"| abs A/V offset p50 / p95 / max over {result['window_s']:g} s windows | {av['p50']} / "
           f"{av['p95']} / {av['max']} ms | <= {AV_MAX_MS:g} ms throughout: {'met' if av_ok else 'missed'} |",
           f"| delivered fps speaking / listening | {s['fps_speaking']} / {s['fps_listening']} | 25 / 12.5 "
           "(idle_frame_stride 2) |",
           f"| stalls > 200 ms (video or audio) | {s['stalls_over_200ms']} (longest gap: video "
           f"{s['video_gap_max_ms']} ms, audio {s['audio_gap_max_ms']} ms) | 0: "
           f"{'met' if s['stalls_over_200ms'] == 0 else 'missed'} |",
           f"| first word p50 / p95 | {result['first_word_s']['p50']} / {result['first_word_s']['p95']} s "
           "| |",
           "", "| t (min) | RSS MB |", "|---|---|"]
    out += [f"| {r['t_min']} | {r['rss_mb']} |" for r in result["rss_samples"]]
    out += ["", "| window from (s) | fps | speaking | listening | A/V ms | max video gap ms "
            "| max audio gap ms | stalls |", "|---|---|---|---|---|---|---|---|"]
    out += [f"| {r['t_s']} | {r['fps']} | {r['fps_speaking']} | {r['fps_listening']} | {r['av_offset_ms']} | "
            f"{r['video_gap_max_ms']} | {r['audio_gap_max_ms']} | {r['stalls']} |" for r in result["windows"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running runtime (default: start the cpu profile here)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--turn-every", type=float, default=20.0, help="silence after each reply, s")
    parser.add_argument("--window", type=float, default=60.0, help="measure window, s")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                              "minutes": args.minutes, "turn_every_s": args.turn_every,
                              "window_s": args.window, "load_before": load()}
    if args.url:
        result["runtime"] = args.url
        result |= asyncio.run(soak(args.url.rstrip("/"), args.minutes, args.turn_every, args.window))
    else:
        print("starting the runtime (cpu profile)...", flush=True)
        os.environ.update(server_env(args.minutes))
        with serve_cpu() as base:
            result["runtime"] = "cpu profile, started here"
            result |= asyncio.run(soak(base, args.minutes, args.turn_every, args.window))
    result["load_after"] = load()
    text = markdown(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "realtime_soak.md").write_text(text)
    (args.out / "realtime_soak.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
