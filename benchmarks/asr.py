"""``python -m benchmarks.asr``: one realtime turn's whisper pass, language given vs detected.

Times ``WhisperASR.transcribe_steps(fast=True)`` (what a voice call's turn runs) on short utterances
in en, zh and es: the LJSpeech fixture cut to 3 s, and a line per language spoken by the bundled TTS.
Three ways, interleaved per repeat so the machine's load hits them alike: the language given; detected
by stock faster-whisper (which encodes the 30 s window twice); detected by the engine's
``OneEncodeWhisper`` (once). Prints Markdown and writes it with the raw times to ``out/bench/asr.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import soxr

from benchmarks.__main__ import SPEECH_CLIP, machine
from engines.asr.whisper import WHISPER_RATE, WhisperASR
from engines.media.audio import load_audio
from engines.tts.bundled import BundledTTS

LINES = {"zh": "你好，今天天气怎么样？", "es": "Hola, ¿cómo estás hoy?"}
CLIP_S = 3.0


def utterances() -> dict[str, tuple[str, np.ndarray]]:
    """name -> (language, 16 kHz float32 audio)."""
    pcm, rate = load_audio(SPEECH_CLIP)
    clips = {"en (LJ001-0001, 3 s)": ("en", _at_16k(pcm, rate)[: int(CLIP_S * WHISPER_RATE)])}
    tts = BundledTTS()
    for language, text in LINES.items():
        speech, rate = tts.synthesize(text, language)
        clips[f"{language} (TTS)"] = (language, _at_16k(speech, rate))
    return clips


def _at_16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    return soxr.resample(pcm.astype(np.float32), rate, WHISPER_RATE).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("out/bench/asr"))
    args = parser.parse_args()
    from faster_whisper import WhisperModel

    asr = WhisperASR()
    asr.load()
    one_encode = asr._whisper
    stock = WhisperModel(str(asr.model_dir()), device="cpu", compute_type="int8", cpu_threads=asr.cpu_threads)
    stock.forget = lambda: None  # the engine calls it after each pass; stock keeps nothing to forget
    ways = {"language given": (one_encode, True), "detected, stock faster-whisper": (stock, False),
            "detected, one encode (engine)": (one_encode, False)}
    clips = utterances()
    times: dict[str, dict[str, list[float]]] = {name: {way: [] for way in ways} for name in clips}
    heard: dict[str, dict[str, str]] = {name: {} for name in clips}
    for _ in range(args.repeats + 1):  # the first round warms up and is not counted
        for name, (language, audio) in clips.items():
            for way, (model, given) in ways.items():
                asr._whisper = model
                start = time.perf_counter()
                *_, transcript = asr.transcribe_steps(audio, WHISPER_RATE, language if given else None,
                                                      fast=True)
                times[name][way].append((time.perf_counter() - start) * 1000)
                heard[name][way] = f"{transcript.language}: {transcript.text}"
    load = os.getloadavg()
    lines = [f"Machine: {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average "
             f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the end; median of {args.repeats}.", "",
             "| utterance | " + " | ".join(f"{way}, ms" for way in ways) + " | heard (one encode) |",
             "|---" * (len(ways) + 2) + "|"]
    for name, by_way in times.items():
        medians = [statistics.median(values[1:]) for values in by_way.values()]
        lines.append(f"| {name} | " + " | ".join(f"{m:.0f}" for m in medians)
                     + f" | {heard[name]['detected, one encode (engine)']} |")
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"times_ms": times, "heard": heard}, indent=1,
                                                        ensure_ascii=False))


if __name__ == "__main__":
    main()
