"""``python -m evaluator run [--scenarios all|NAME...] [--repeats N] [--voice REF] [--image PORTRAIT]``.

``--target URL`` is for the Ray Serve API, which does not exist yet: it is refused with exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from evaluator.run import Evaluator
from evaluator.summary import load_runs, plot_trends, summarize
from realtime_avatar import logs
from realtime_avatar.scenarios import load_scenarios

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "outputs"
DEFAULT_VOICE = Path(__file__).resolve().parent.parent / "tests" / "data" / "LJ001-0001.wav"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="render the scenarios, measure them, print the summary")
    run.add_argument("--scenarios", nargs="+", default=["all"], help="'all' or scenario names")
    run.add_argument("--repeats", type=int, default=3)
    run.add_argument("--target", help="HTTP API base URL (not available until the Serve API lands)")
    run.add_argument("--voice", type=Path, default=DEFAULT_VOICE, help="reference voice (default: LJSpeech)")
    run.add_argument("--image", type=Path, help="portrait (default: the bundled one)")
    run.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    logs.configure("WARNING")

    if args.target:
        print("error: --target needs the Ray Serve HTTP API, which is not built yet", file=sys.stderr)
        return 2
    scenarios = load_scenarios()
    if args.scenarios != ["all"]:
        known = {s.name: s for s in scenarios}
        unknown = [name for name in args.scenarios if name not in known]
        if unknown:
            print(f"error: unknown scenarios {unknown}; known: {', '.join(known)}", file=sys.stderr)
            return 2
        scenarios = [known[name] for name in args.scenarios]

    started = time.perf_counter()
    evaluator = Evaluator(args.output, args.voice, args.image)
    this_run = []
    total = len(scenarios) * args.repeats
    for _ in range(args.repeats):
        for scenario in scenarios:
            document = evaluator.run(scenario)
            this_run.append(document)
            m = document["metrics"]
            print(f"[{len(this_run)}/{total}] {document['run_id']}: total {m['total_generation_ms']:.0f} ms, "
                  f"lang {m['language_detected']} ({m['language_correctness_1_1']}), "
                  f"similarity {m['speaker_similarity']:.2f}, lip sync {m['lip_sync_coherence_0_1']:.2f}",
                  flush=True)
    table = summarize(this_run)
    (args.output / "summary.md").write_text(table)
    plot_trends(load_runs(args.output), args.output / "trends.png")
    print()
    print(table)
    print(f"{len(this_run)} runs in {time.perf_counter() - started:.0f} s; JSON, media and summary.md, "
          f"trends.png in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
