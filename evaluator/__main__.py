"""``python -m evaluator run [--scenarios all|NAME...] [--repeats N] [--voice REF.wav] [--image PORTRAIT]``.

Renders in-process with the configured engines (AVATAR_PROFILE / AVATAR_* select them), or, with
``--target URL [--api-key KEY]``, through the runtime's HTTP API at URL (``/v1/render``; the stage timings
are the server's, from its Server-Timing header: ``evaluator/target.py``). A target that cannot be used
(unreachable, 401, 503 after bounded retries, a body that is not an MP4) ends the run with one line, exit 1.
``--target URL --chat``: each scenario's line is asked through ``/v1/chat`` and the reply's clips measured.

``python -m evaluator golden [--scenarios ...] [--voice REF.wav]``: render each scenario once and
rewrite ``evaluator/golden/f0.json`` (the pitch regression baseline); only on purpose.

``python -m evaluator sheet [--text T] [--lang L] [--output PNG]``: a contact sheet of the mouth on the
frames where the words want rounded, spread and closed lips (``evaluator/contact_sheet.py``).

``--realtime [--target URL]``: each scenario is asked by voice in a WebRTC call to the runtime (the one
at URL, or a cpu profile started here) and the spoken answer is measured as received
(``evaluator/realtime.py``); JSON per run in ``outputs/realtime/`` unless ``--output`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from evaluator.run import Evaluator
from evaluator.summary import load_runs, plot_trends, summarize
from evaluator.target import API_KEY_ENV, ApiEvaluator, ApiTarget, ChatEvaluator, TargetError
from realtime_avatar import logs
from realtime_avatar.scenarios import Scenario, load_scenarios

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "outputs"
DEFAULT_VOICE = Path(__file__).resolve().parent.parent / "tests" / "data" / "LJ001-0001.wav"
# The API run's summary adds the server's encode time and the client's wall times beside the server's.
API_SUMMARY = ("encode_ms", "client_first_byte_ms", "client_total_ms")
CHAT_SUMMARY = ("llm_ms", "encode_ms", "first_clip_ms", "client_total_ms")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="render the scenarios, measure them, print the summary")
    run.add_argument("--scenarios", nargs="+", default=["all"], help="'all' or scenario names")
    run.add_argument("--repeats", type=int, default=3, help="runs per scenario (default 3)")
    run.add_argument("--target", help="runtime base URL (e.g. http://127.0.0.1:8000): render through its "
                     "HTTP API; with --realtime, the runtime to call")
    run.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None,
                     help=f"the runtime's serve.api_key, sent as a bearer token (default: ${API_KEY_ENV})")
    run.add_argument("--chat", action="store_true",
                     help="with --target: ask each scenario's line through /v1/chat and measure the reply")
    run.add_argument("--realtime", action="store_true",
                     help="ask each scenario by voice over WebRTC and measure the answer as received")
    run.add_argument("--voice", type=Path, default=DEFAULT_VOICE,
                     help="reference voice, also passed to the TTS (default: tests/data/LJ001-0001.wav)")
    run.add_argument("--default-voice", action="store_true",
                     help="in-process runs: the TTS speaks in its default voice instead of the reference's "
                     "(the reference still judges the pitch)")
    run.add_argument("--image", type=Path, help="portrait (default: the bundled one)")
    run.add_argument("--output", type=Path, help="where JSON, media, summary go (default: outputs/, "
                     "outputs/api/ with --target, outputs/realtime/ with --realtime)")
    gold = commands.add_parser("golden", help="rewrite evaluator/golden/f0.json from one render per scenario")
    gold.add_argument("--scenarios", nargs="+", default=["all"], help="'all' or scenario names")
    gold.add_argument("--voice", type=Path, default=DEFAULT_VOICE, help="reference voice (as for run)")
    gold.add_argument("--image", type=Path, help="portrait (default: the bundled one)")
    sheet = commands.add_parser("sheet", help="PNG contact sheet of mouth shapes on a rendered sentence")
    sheet.add_argument("--text", help="what to say (default: a sentence with o, ee and m)")
    sheet.add_argument("--lang", default="en")
    sheet.add_argument("--output", type=Path, default=Path("out/eval/sheet.png"))
    return parser


def _sheet(args: argparse.Namespace) -> int:
    from engines.media.audio import load_audio
    from engines.media.mp4 import probe_mp4, read_frames
    from evaluator.contact_sheet import DEFAULT_TEXT, contact_sheet
    from realtime_avatar.pipeline import AvatarPipeline

    pipeline = AvatarPipeline()
    mp4 = args.output.with_suffix(".mp4")
    mp4.parent.mkdir(parents=True, exist_ok=True)
    report = pipeline.render_mp4(args.text or DEFAULT_TEXT, args.lang, mp4)
    pcm, sample_rate = load_audio(mp4)
    shown = contact_sheet(read_frames(mp4), probe_mp4(mp4).fps, pcm, sample_rate, report.segments,
                          pipeline.asr, args.output)
    print(f"wrote {args.output} (frames per row: {shown}) and {mp4}")
    return 0


def _golden(args: argparse.Namespace, scenarios: list[Scenario]) -> int:
    import tempfile

    from evaluator.golden import GOLDEN_FILE, write_golden

    with tempfile.TemporaryDirectory() as work:
        evaluator = Evaluator(Path(work), args.voice, args.image)
        stats = {s.name: evaluator.golden_stats(s, Path(work)) for s in scenarios}
    write_golden(evaluator.config_key, stats)
    for name, value in stats.items():
        print(f"{name}: {value.to_dict()}")
    print(f"wrote {GOLDEN_FILE} (config_key {evaluator.config_key})")
    return 0


def _select(names: list[str]) -> list[Scenario]:
    scenarios = load_scenarios()
    if names == ["all"]:
        return scenarios
    known = {s.name: s for s in scenarios}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {', '.join(known)}")
    return [known[name] for name in names]


def _progress(done: int, total: int, document: dict) -> str:
    m = document["metrics"]
    rmse = "-" if m["f0_rmse_hz"] is None else f"{m['f0_rmse_hz']:.1f} Hz"
    words = "-" if m.get("lip_sync_words_0_1") is None else f"{m['lip_sync_words_0_1']:.2f}"
    client = f" (client {m['client_total_ms']:.0f} ms)" if "client_total_ms" in m else ""
    return (f"[{done}/{total}] {document['run_id']}: total {m['total_generation_ms']:.0f} ms{client}, "
            f"lang {m['language_detected']} ({m['language_correctness_1_1']}), "
            f"similarity {m['speaker_similarity']:.2f}, f0 rmse {rmse}, "
            f"motion coherence {m['lip_sync_coherence_0_1']:.2f}, lip sync to words {words}, "
            f"f0 vs reference {m['f0_median_st_vs_reference']} st")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure("WARNING")
    if args.command == "sheet":
        return _sheet(args)
    if args.command == "golden":
        try:
            return _golden(args, _select(args.scenarios))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.chat and (args.realtime or not args.target):
        print("error: --chat asks through a runtime's /v1/chat: give --target URL (and no --realtime)",
              file=sys.stderr)
        return 2
    if args.output is None:  # each mode its own folder: summaries and trends compare like with like
        mode = "realtime" if args.realtime else "chat" if args.chat else "api" if args.target else ""
        args.output = DEFAULT_OUTPUT / mode
    if args.repeats < 1:
        print("error: --repeats must be at least 1", file=sys.stderr)
        return 2
    try:
        scenarios = _select(args.scenarios)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.realtime:
        return _run_realtime(args, scenarios)
    if args.target:
        return _run_api(args, scenarios)
    evaluator = Evaluator(args.output, args.voice, args.image, speak_with_reference=not args.default_voice)
    return _evaluate(evaluator, args, scenarios, time.perf_counter())


def _run_api(args: argparse.Namespace, scenarios: list[Scenario]) -> int:
    started = time.perf_counter()
    target = ApiTarget(args.target, args.api_key)
    try:
        kind = ChatEvaluator if args.chat else ApiEvaluator
        return _evaluate(kind(target, args.output, args.voice, args.image), args, scenarios, started,
                         extra=CHAT_SUMMARY if args.chat else API_SUMMARY)
    except TargetError as exc:
        print(f"error: --target {args.target}: {exc}", file=sys.stderr)
        return 1
    finally:
        target.close()


def _evaluate(evaluator: Evaluator, args: argparse.Namespace, scenarios: list[Scenario], started: float,
              extra: tuple[str, ...] = ()) -> int:
    this_session = []
    total = len(scenarios) * args.repeats
    for _ in range(args.repeats):  # interleaved, so slow drift (thermal, neighbours) spreads over scenarios
        for scenario in scenarios:
            this_session.append(evaluator.run(scenario))
            print(_progress(len(this_session), total, this_session[-1]), flush=True)
    table = summarize(this_session, extra)
    (args.output / "summary.md").write_text(table)
    plot_trends(load_runs(args.output), args.output / "trends.png")
    print()
    print(table)
    print(f"{len(this_session)} runs in {time.perf_counter() - started:.0f} s; JSON, media/, baselines/, "
          f"summary.md and trends.png in {args.output}")
    return 0


def _run_realtime(args: argparse.Namespace, scenarios: list[Scenario]) -> int:
    import contextlib

    from evaluator.realtime import RealtimeEvaluator
    from realtime_avatar.rtc.harness import serve_cpu

    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        base = args.target.rstrip("/") if args.target else stack.enter_context(serve_cpu())
        evaluator = RealtimeEvaluator(base, args.output, args.voice)
        runs = []
        total = len(scenarios) * args.repeats
        for _ in range(args.repeats):
            for scenario in scenarios:
                runs.append(evaluator.run(scenario))
                m, rt = runs[-1]["metrics"], runs[-1]["realtime"]
                print(f"[{len(runs)}/{total}] {runs[-1]['run_id']}: first audio {rt['first_audio_ms']} ms, "
                      f"first frame {rt['first_frame_ms']} ms, A/V {rt['av_lag_ms']} ms, lang "
                      f"{m['language_detected']} ({m['language_correctness_1_1']}), similarity "
                      f"{m['speaker_similarity']:.2f}, lip sync {m['lip_sync_coherence_0_1']:.2f}",
                      flush=True)
    table = summarize(runs)
    (args.output / "summary.md").write_text(table)
    plot_trends(load_runs(args.output), args.output / "trends.png")
    print()
    print(table)
    print(f"{len(runs)} realtime runs in {time.perf_counter() - started:.0f} s; JSON, summary.md and "
          f"trends.png in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
