"""``python -m benchmarks.realtime``: voice calls through the runtime, measured on the received media.

A headless aiortc client (``realtime_avatar.rtc.client``) calls the runtime like the page does: one
call per language (``auto`` sessions: the runtime's ASR names the language), each a run of questions
spoken by the runtime's own TTS in a female reference voice, real silence between, and one barge-in
(a request for a long story, talked over while the avatar answers it). Per turn, on what arrived:
end of user speech -> first avatar audio above silence and -> first speaking frame; the barge-in stop
(from the first sound of the interruption to the avatar's last sound, and from the runtime's
``interrupted`` event); the A/V lag (received audio envelope vs mouth openness, positive = video
late) on the arrival timeline and on the sender's stamps; frame pacing; the runtime's own breakdown
(``turn_timings``). Whisper then hears each reply (language identified, not given).

Starts the cpu profile here unless ``--url`` names a running runtime. Prints Markdown and writes it
with every raw number to ``out/bench/realtime.{md,json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.__main__ import machine
from benchmarks.llm import QUESTIONS
from realtime_avatar.rtc import coturn, measure
from realtime_avatar.rtc.harness import (
    Line,
    analyse,
    call_summary,
    hear_replies,
    record_call,
    serve_cpu,
    speak_lines,
)

LANGUAGES = ("en", "zh", "es")
LONG = {"en": "Tell me a long story about your work and your city.",
        "zh": "请给我讲一个关于你的工作和你的城市的长故事。",
        "es": "Cuéntame una historia larga sobre tu trabajo y tu ciudad."}
BARGE = {"en": "Wait, stop. Where do you live?", "zh": "等一下，停。你住在哪里？",
         "es": "Espera, para. ¿Dónde vives?"}
SERVER_KEYS = ("vad_end", "asr_final", "llm_first_token", "first_sentence", "first_part", "first_audio_sent",
               "first_frame_sent")


def plan(turns: int, barge_ins: int) -> dict[str, list[Line]]:
    """``turns`` lines over the three languages; in ``barge_ins`` of the calls the last two are a long
    story and the line that talks over it."""
    per_call = {lang: turns // 3 + (i < turns % 3) for i, lang in enumerate(LANGUAGES)}
    calls: dict[str, list[Line]] = {}
    for i, lang in enumerate(LANGUAGES):
        barge = i < barge_ins
        n = per_call[lang] - (2 if barge else 0)
        lines = [Line(QUESTIONS[lang][k % len(QUESTIONS[lang])], lang) for k in range(n)]
        if barge:
            lines += [Line(LONG[lang], lang), Line(BARGE[lang], lang, barge_in=True)]
        calls[lang] = lines
    return calls


def _stat(rows: list[dict[str, Any]], get: Any) -> dict[str, float | None]:
    return measure.percentiles([get(r) for r in rows])


def summarize(rows: list[dict[str, Any]], calls: list[dict[str, Any]]) -> dict[str, Any]:
    answered = [r for r in rows if r.get("first_audio_ms") is not None]
    barges = [r["barge_in_result"] for r in rows if r.get("barge_in_result")]
    synced = [r for r in answered if r.get("av_lag_ms") is not None and r.get("av_corr", 0) > 0.3]
    summary: dict[str, Any] = {
        "turns": len(rows), "answered": len(answered),
        "first_audio_ms": _stat(answered, lambda r: r["first_audio_ms"]),
        "first_frame_ms": _stat(answered, lambda r: r["first_frame_ms"]),
        "barge_in_stop_ms": measure.percentiles([b["stop_ms"] for b in barges]),
        "barge_in_stop_after_interrupted_ms": measure.percentiles([b["stop_after_interrupted_ms"]
                                                                   for b in barges]),
        "barge_in_interrupted_event_ms": measure.percentiles([b["interrupted_event_ms"] for b in barges]),
        "barge_ins_honoured": sum(b["interrupted_turn"] is not None and (b["stop_ms"] or 1e9) <= 1000
                                  for b in barges),
        "barge_ins": len(barges),
        "av_lag_ms": _stat(synced, lambda r: r["av_lag_ms"]),
        "av_lag_abs_ms": _stat(synced, lambda r: abs(r["av_lag_ms"])),
        "av_lag_pts_abs_ms": _stat(synced, lambda r: None if r.get("av_lag_pts_ms") is None
                                   else abs(r["av_lag_pts_ms"])),
        "av_onset_offset_ms": _stat(answered, lambda r: r.get("av_onset_offset_ms")),
        "reply_language_ok": sum((r.get("reply_heard") or {}).get("language") == r["language"]
                                 for r in answered),
        "server_ms": {k: _stat(answered, lambda r, k=k: (r.get("server_timings_ms") or {}).get(k))
                      for k in SERVER_KEYS},
    }
    for part in ("speaking", "listening"):
        fps = [c["summary"][part]["fps"] for c in calls if c["summary"][part]["fps"] is not None]
        p95 = [c["summary"][part]["interval_p95_ms"] for c in calls if c["summary"][part]["fps"] is not None]
        summary[f"{part}_fps"] = round(float(np.mean(fps)), 2) if fps else None
        summary[f"{part}_interval_p95_ms"] = round(float(max(p95)), 1) if p95 else None
    return summary


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]

    def pp(stat: dict[str, Any]) -> str:
        return f"{stat['p50']} / {stat['p95']} ms (n={stat['n']})"

    lines = [f"Machine: {result['machine']}. Date: {result['date']}. Runtime: {result['runtime']}. "
             f"Transport: {result.get('transport', 'webrtc')}.", "",
             f"{s['answered']} of {s['turns']} turns answered; replies heard by whisper in the asked "
             f"language: {s['reply_language_ok']} of {s['answered']}; barge-ins honoured (interrupted, "
             f"audio stopped within 1 s): {s['barge_ins_honoured']} of {s['barge_ins']}.", "",
             "| measure (client side, on what arrived) | p50 / p95 |", "|---|---|",
             f"| end of speech -> first avatar audio | {pp(s['first_audio_ms'])} |",
             f"| end of speech -> first speaking frame | {pp(s['first_frame_ms'])} |",
             f"| barge-in: interruption's first sound -> avatar's last sound | {pp(s['barge_in_stop_ms'])} |",
             f"| barge-in: `interrupted` event -> avatar's last sound | "
             f"{pp(s['barge_in_stop_after_interrupted_ms'])} |",
             f"| A/V lag, arrival timeline (+ = video late) | {pp(s['av_lag_ms'])} |",
             f"| abs A/V lag, arrival / sender stamps | {pp(s['av_lag_abs_ms'])} / "
             f"{pp(s['av_lag_pts_abs_ms'])} |",
             f"| video while speaking: fps, frame interval p95 | {s['speaking_fps']} fps, "
             f"{s['speaking_interval_p95_ms']} ms |",
             f"| video while listening: fps, frame interval p95 | {s['listening_fps']} fps, "
             f"{s['listening_interval_p95_ms']} ms |", "",
             "| runtime breakdown, ms after the end of speech (turn_timings) | p50 / p95 |", "|---|---|"]
    lines += [f"| {k} | {pp(v)} |" for k, v in s["server_ms"].items()]
    lines += compare(result)
    lines += ["", "| call | turn | line | heard | first audio | first frame | A/V lag | reply heard as |",
              "|---|---|---|---|---|---|---|---|"]
    for call in result["calls"]:
        for r in call["rows"]:
            heard = (r.get("reply_heard") or {}).get("language")
            extra = ""
            if r.get("barge_in_result"):
                extra = f" (barge-in: stop {r['barge_in_result']['stop_ms']} ms)"
            lines.append(f"| {call['language']} | {r['turn']} | {r['text']}{extra} | {r['heard_language']} | "
                         f"{r['first_audio_ms']} | {r['first_frame_ms']} | {r['av_lag_ms']} | {heard} |")
    return "\n".join(lines) + "\n"


def compare(result: dict[str, Any]) -> list[str]:
    """WebRTC next to the WebSocket fallback, when the run made both (the same lines in the same run)."""
    by = result.get("by_transport")
    if not by:
        return []
    names = list(by)
    lines = ["", "| measure, p50 / p95 | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key in (("end of speech -> first avatar audio, ms", "first_audio_ms"),
                       ("end of speech -> first speaking frame, ms", "first_frame_ms"),
                       ("abs A/V lag, arrival timeline, ms", "av_lag_abs_ms"),
                       ("abs A/V lag, sender stamps, ms", "av_lag_pts_abs_ms")):
        cells = [f"{by[t]['summary'][key]['p50']} / {by[t]['summary'][key]['p95']}" for t in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for part in ("speaking", "listening"):
        sums = [by[t]["summary"] for t in names]
        cells = [f"{x[f'{part}_fps']} fps, p95 {x[f'{part}_interval_p95_ms']} ms" for x in sums]
        lines.append(f"| video while {part} | " + " | ".join(cells) + " |")
    cells = [f"{by[t]['summary']['answered']} of {by[t]['summary']['turns']}" for t in names]
    lines.append("| turns answered | " + " | ".join(cells) + " |")
    return lines


def run(base: str, turns: int, barge_ins: int, gap_s: float, hear: bool, runtime: str,
        transports: tuple[str, ...] = ("webrtc",)) -> dict[str, Any]:
    """Every call once per transport, one after the other (e.g. webrtc, relay, then the WebSocket fallback:
    the same lines, the same runtime, the same run); the first transport's numbers are the result's own."""
    calls = plan(turns, barge_ins)
    print("speaking the lines with the runtime's TTS...", flush=True)
    spoken = {lang: speak_lines(base, lines) for lang, lines in calls.items()}
    for transport in transports:
        print(f"warm-up call ({transport})...", flush=True)
        record_call(base, "auto", spoken["en"][:1], gap_s=gap_s, transport=transport)  # one-off costs
    asr = None
    if hear:
        from engines.asr.whisper import WhisperASR

        asr = WhisperASR()
    result: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                              "runtime": runtime, "turns": turns, "gap_s": gap_s, "transport": transports[0]}
    per: dict[str, list[dict[str, Any]]] = {t: [] for t in transports}
    for lang, utterances in spoken.items():
        for transport in transports:
            per[transport].append(_measured_call(base, lang, utterances, gap_s, transport, asr))
    result["calls"] = per[transports[0]]
    result["summary"] = summarize([r for c in result["calls"] for r in c["rows"]], result["calls"])
    if len(transports) > 1:
        result["by_transport"] = {t: {"summary": summarize([r for c in per[t] for r in c["rows"]], per[t]),
                                      "calls": per[t]} for t in transports}
    return result


def _measured_call(base: str, lang: str, utterances: list[Any], gap_s: float, transport: str,
                   asr: Any) -> dict[str, Any]:
    print(f"call in {lang} over {transport}: {len(utterances)} lines...", flush=True)
    started = time.perf_counter()
    recording = record_call(base, "auto", utterances, gap_s=gap_s, transport=transport)
    wall = time.perf_counter() - started
    media = analyse(recording)
    rows = measure.measure_turns(media)
    if asr is not None:
        hear_replies(asr, recording, rows)
    for r in rows:
        print(f"  turn {r['turn']}: first audio {r['first_audio_ms']} ms, "
              f"frame {r['first_frame_ms']} ms, A/V {r['av_lag_ms']} ms  {r['text']}", flush=True)
    return {"language": lang, "transport": transport, "session_id": recording.session_id,
            "call_id": recording.call_id, "wall_s": round(wall, 1), "summary": call_summary(media, rows),
            "rows": rows}


def _with_local_relay(stack: contextlib.ExitStack) -> None:
    """A coturn on loopback for the "relay" calls, and the runtime told of it (its own ICE policy stays
    "all", so the direct calls of the same run still connect directly)."""
    relay = coturn.LocalRelay.pick()
    print(f"TURN relay at {stack.enter_context(relay.running())}", flush=True)
    for name, value in relay.runtime_env(policy="all").items():
        stack.callback(_restore, name, os.environ.get(name))
        os.environ[name] = value  # read by the settings the runtime is started with


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running runtime (default: start the cpu profile here)")
    parser.add_argument("--turns", type=int, default=21, help="lines over the three calls (>= 20)")
    parser.add_argument("--barge-ins", type=int, default=3, help="calls that end with a barge-in (0-3)")
    parser.add_argument("--gap", type=float, default=1.0, help="silence after each reply, s")
    parser.add_argument("--no-hear", action="store_true", help="skip whisper on the replies")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--transport", choices=("webrtc", "relay", "websocket", "both", "all"),
                        default="webrtc",
                        help="WebRTC direct, WebRTC relayed by a local coturn (this side relay-only), the "
                             "WebSocket fallback; both: webrtc + websocket; all: the three, call by call")
    args = parser.parse_args(argv)
    transports = {"both": ("webrtc", "websocket"), "all": ("webrtc", "relay", "websocket")}.get(
        args.transport, (args.transport,))
    if args.url:  # for "relay", that runtime needs a TURN relay of its own (realtime.turn)
        result = run(args.url.rstrip("/"), args.turns, args.barge_ins, args.gap, not args.no_hear, args.url,
                     transports)
    else:
        with contextlib.ExitStack() as stack:
            if "relay" in transports:
                _with_local_relay(stack)
            print("starting the runtime (cpu profile)...", flush=True)
            base = stack.enter_context(serve_cpu())
            result = run(base, args.turns, args.barge_ins, args.gap, not args.no_hear,
                         "cpu profile, started here", transports)
    text = markdown(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "realtime" if args.transport == "webrtc" else f"realtime-{args.transport}"
    (args.out / f"{name}.md").write_text(text)
    (args.out / f"{name}.json").write_text(json.dumps(result, ensure_ascii=False, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
