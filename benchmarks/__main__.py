"""``make bench``: scenario render timings, renderer frames/s and TTS round-trip intelligibility.

Prints Markdown tables (paste into BENCHMARKS.md) and writes them with the raw numbers to ``out/``.
Every figure is a median over repeats, measured in one run on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engines.asr.metrics import error_rate
from engines.media.audio import load_audio
from realtime_avatar.pipeline import AvatarPipeline, SpokenSegment, bundled_portrait_png
from realtime_avatar.scenarios import load_scenarios

SPEECH_CLIP = Path(__file__).resolve().parent.parent / "tests" / "data" / "LJ001-0001.wav"


def machine() -> str:
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def bench_scenarios(pipeline: AvatarPipeline, repeats: int, workdir: Path) -> list[dict]:
    """Each scenario with the default voice and with a female reference (LJSpeech), which makes the
    bundled engine pick its female presets: both must be intelligible in every language."""
    portrait = pipeline.prepare_portrait()
    pipeline.warm_up()
    voices = {"default": None, "LJ reference": pipeline.prepare_voice(SPEECH_CLIP)}
    for voice in voices.values():  # first-call costs (phonemizer dictionaries, ONNX sessions)
        for scenario in load_scenarios():
            pipeline.render_mp4(scenario.text, scenario.language, workdir / "warmup.mp4",
                                portrait=portrait, voice=voice)
    rows = []
    for voice_name, voice in voices.items():
        for scenario in load_scenarios():
            runs = []
            for repeat in range(repeats):
                path = workdir / f"{scenario.name}_{repeat}.mp4"
                report = pipeline.render_mp4(scenario.text, scenario.language, path, portrait=portrait,
                                             voice=voice)
                runs.append(
                    {**report.timings_ms, "audio_s": report.audio_seconds, "rtf": report.real_time_factor}
                )
            row: dict[str, Any] = {"scenario": scenario.name, "voice": voice_name, "repeats": repeats}
            for key in ("tts_ms", "avatar_render_ms", "encode_ms", "total_generation_ms", "audio_s", "rtf"):
                row[key] = statistics.median(run.get(key, 0.0) for run in runs)
            row.update(_intelligibility(pipeline.asr, workdir / f"{scenario.name}_0.mp4", report.segments))
            row["expected_languages"] = "/".join(scenario.languages)
            rows.append(row)
            total = row["total_generation_ms"]
            print(f"  {scenario.name} ({voice_name}): rtf {row['rtf']:.3f}, total {total:.0f} ms", flush=True)
    return rows


def _intelligibility(asr: Any, mp4: Path, segments: list[SpokenSegment]) -> dict[str, Any]:
    """Whisper on the MP4's own audio, one language segment at a time (whisper gives one language
    per call, so a mixed-language clip is judged per segment)."""
    pcm, sr = load_audio(mp4)
    heard, errors = [], []
    for segment in segments:
        piece = pcm[int(segment.start_s * sr) : int(segment.end_s * sr)]
        transcript = asr.transcribe(piece, sr)
        heard.append(transcript.language)
        errors.append(error_rate(segment.text, transcript.text, segment.language))
    return {"whisper_language": "/".join(heard), "error_rate": max(errors)}


def bench_renderer(pipeline: AvatarPipeline, repeats: int) -> list[dict]:
    from engines.avatar.portrait import prepare_portrait

    pcm, sr = load_audio(SPEECH_CLIP)
    track = pipeline.new_motion().from_audio(pcm, sr)
    rows = []
    for size in (256, 360):
        portrait = prepare_portrait(bundled_portrait_png(), size=size)
        pipeline.renderer.render(portrait, track[:10])  # per-portrait precomputation outside the timing
        fps = []
        for _ in range(repeats):
            started = time.perf_counter()
            pipeline.renderer.render(portrait, track)
            fps.append(len(track) / (time.perf_counter() - started))
        rows.append({"size": size, "frames": len(track), "fps_median": statistics.median(fps),
                     "fps_min": min(fps), "fps_max": max(fps)})
        print(f"  renderer {size}px: {statistics.median(fps):.0f} frames/s", flush=True)
    return rows


def markdown(machine_line: str, scenarios: list[dict], renderer: list[dict]) -> str:
    lines = [f"Machine: {machine_line}. Date: {datetime.now(UTC):%Y-%m-%d}.", ""]
    if scenarios:
        lines += [
            f"Scenario renders (median of {scenarios[0]['repeats']} runs, 256 px, bundled CPU engines; "
            "language and WER/CER (CER for zh) by whisper base on each language segment of the MP4 audio):",
            "",
            "| scenario | voice | audio s | tts_ms | avatar_render_ms | encode_ms | total_generation_ms "
            "| RTF | expected lang | whisper lang | worst WER/CER |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in scenarios:
            lines.append(
                f"| {r['scenario']} | {r['voice']} | {r['audio_s']:.2f} | {r['tts_ms']:.0f} "
                f"| {r['avatar_render_ms']:.0f} "
                f"| {r['encode_ms']:.0f} | {r['total_generation_ms']:.0f} | {r['rtf']:.3f} "
                f"| {r['expected_languages']} | {r['whisper_language']} | {r['error_rate']:.2f} |"
            )
        lines.append("")
    if renderer:
        lines += ["Lite renderer throughput (motion from a 9.7 s speech clip, median of runs):", "",
                  "| size | frames | frames/s (median) | min | max |", "|---|---|---|---|---|"]
        for r in renderer:
            lines.append(f"| {r['size']} px | {r['frames']} | {r['fps_median']:.0f} | {r['fps_min']:.0f} "
                         f"| {r['fps_max']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=("scenarios", "renderer"), help="run one part")
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    machine_line = machine()
    print(f"machine: {machine_line}", flush=True)
    pipeline = AvatarPipeline()
    with tempfile.TemporaryDirectory() as tmp:
        scenarios = [] if args.only == "renderer" else bench_scenarios(pipeline, args.repeats, Path(tmp))
    renderer = [] if args.only == "scenarios" else bench_renderer(pipeline, args.repeats)
    table = markdown(machine_line, scenarios, renderer)
    (args.out / "bench.md").write_text(table)
    (args.out / "bench.json").write_text(json.dumps(
        {"machine": machine_line, "scenarios": scenarios, "renderer": renderer}, indent=2, default=float))
    print()
    print(table)


if __name__ == "__main__":
    main()
