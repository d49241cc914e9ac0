"""Lip sync to words per motion engine, side by side: ``python -m benchmarks.lipsync_engines``.

Runs the evaluator (``python -m evaluator run --scenarios all``) once per motion engine, each in its own
process with ``AVATAR_MOTION__NAME`` set (a registry alias or ``module:Class``; everything else is the
configured defaults), then prints the medians of ``lip_sync_words_0_1`` and its parts per scenario as
Markdown. The evaluator's JSON and MP4s stay under ``--output``/<engine>.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

PARTS = ("timing", "pause_closed", "bilabial_closed", "rounded", "spread")


def run_engine(engine: str, output: Path, repeats: int, default_voice: bool = False) -> None:
    env = {**os.environ, "AVATAR_MOTION__NAME": engine}
    subprocess.run([sys.executable, "-m", "evaluator", "run", "--scenarios", "all", "--repeats", str(repeats),
                    "--output", str(output), *(["--default-voice"] if default_voice else [])],
                   env=env, check=True)


def medians(output: Path) -> dict[str, dict[str, float | None]]:
    runs: dict[str, list[dict]] = {}
    for path in sorted(output.glob("*.json")):
        document = json.loads(path.read_text())
        if "scenario" in document:
            runs.setdefault(document["scenario"], []).append(document["metrics"])
    out = {}
    for scenario, metrics in runs.items():
        values = {"score": [m["lip_sync_words_0_1"] for m in metrics]}
        values |= {part: [m["lip_sync_words_parts"][part] for m in metrics] for part in PARTS}
        out[scenario] = {key: (statistics.median(v) if (v := [x for x in vs if x is not None]) else None)
                         for key, vs in values.items()}
    return out


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engines", nargs="*", default=["audio-driven", "visemes"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("out/eval/lipsync_engines"))
    parser.add_argument("--default-voice", action="store_true",
                        help="the TTS's default voice instead of the reference's (evaluator --default-voice)")
    parser.add_argument("--no-run", action="store_true", help="only tabulate runs already under --output")
    args = parser.parse_args()
    folders = {engine: args.output / engine.split(":")[0].replace(".", "_") for engine in args.engines}
    if not args.no_run:
        for engine, folder in folders.items():
            run_engine(engine, folder, args.repeats, args.default_voice)
    results = {engine: medians(folder) for engine, folder in folders.items()}
    scenarios = list(next(iter(results.values())))
    print("| scenario | " + " | ".join(args.engines) + " | "
          + " | ".join(f"{e}: {' / '.join(PARTS)}" for e in args.engines) + " |")
    print("|---|" + "---|" * (2 * len(args.engines)))
    for scenario in scenarios:
        row = [results[e].get(scenario, {}) for e in args.engines]
        scores = [_cell(r.get("score")) for r in row]
        parts = [" / ".join(_cell(r.get(p)) for p in PARTS) for r in row]
        print(f"| {scenario} | " + " | ".join(scores) + " | " + " | ".join(parts) + " |")


if __name__ == "__main__":
    main()
