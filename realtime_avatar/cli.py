"""``avatar`` command line: render a script to a talking-head MP4, serve the API, chat from a terminal;
fetch, verify and check model weights."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from engines.errors import InputError, ModelUnavailableError
from realtime_avatar import logs

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar", description="Realtime Avatar command line.")
    parser.add_argument("--log-level", default="WARNING", help="structured logs on stderr (default WARNING)")
    commands = parser.add_subparsers(dest="command", required=True)

    render = commands.add_parser("render", help="render text to a talking-head MP4")
    render.add_argument("--text", required=True, help="what the avatar says")
    render.add_argument("--lang", default="auto", help="en, zh, es, or auto (per sentence; default)")
    render.add_argument("--image", type=Path, help="portrait image (default: the bundled astronaut)")
    render.add_argument("--motion-video", type=Path,
                        help="10-60 s video of the portrait's person: the avatar's head sway, blinks and "
                             "nods follow theirs (default: generic motion)")
    render.add_argument("--voice", type=Path, help="reference voice audio, at least 2 s (default: bundled)")
    render.add_argument("--size", type=int, choices=(256, 360), help="output square in px (default: config)")
    render.add_argument("--seed", type=int, help="motion seed (default: config)")
    render.add_argument("-o", "--output", type=Path, required=True, help="MP4 path to write")

    serve = commands.add_parser("serve", help="run the HTTP API (Ray Serve), a profile of serve_config.yaml")
    serve.add_argument("--profile", default=None, help="cpu or l4 (default: AVATAR_PROFILE, else cpu)")
    serve.add_argument("--config", type=Path, help="another file shaped like serve_config.yaml")
    serve.add_argument("--port", type=int, help="HTTP port (default: the profile's http_options.port)")
    serve.add_argument("--host", help="HTTP interface (default: the profile's http_options.host; 0.0.0.0 in "
                                      "a container)")
    serve.add_argument("--print-config", action="store_true",
                       help="print the resolved Serve config (for `serve deploy`) instead of running")
    _add_models_parser(commands)
    from realtime_avatar import chat_cli

    chat_cli.add_parser(commands)
    from realtime_avatar import cost_cli

    cost_cli.add_parser(commands)
    return parser


def _add_models_parser(commands: Any) -> None:
    from realtime_avatar.models import REGISTRY

    names = sorted(REGISTRY)
    models = commands.add_parser("models", help="fetch, list and verify production model weights")
    actions = models.add_subparsers(dest="action", required=True)
    root_help = "models root (default: <cache_dir>/models)"

    fetch = actions.add_parser("fetch", help="download a model from the hub, or sync it from a GCS mirror")
    fetch.add_argument("name", choices=names)
    fetch.add_argument("--to", type=Path, help=root_help)
    fetch.add_argument("--from", dest="source", metavar="gs://BUCKET/PREFIX",
                       help="GCS mirror of the models root, instead of the model hub")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")

    listing = actions.add_parser("list", help="the models this tool knows, and whether they are here")
    listing.add_argument("--to", type=Path, help=root_help)

    verify = actions.add_parser("verify", help="check presence, sizes and hashes (exit 0 only if complete)")
    verify.add_argument("name", nargs="?", choices=names, help="one model (default: all)")
    verify.add_argument("--to", type=Path, help=root_help)

    check = actions.add_parser("check", help="list the weights a profile's engines need and lack")
    check.add_argument("--profile", help="config profile (default: AVATAR_PROFILE, else cpu)")


def _render(args: argparse.Namespace) -> int:
    from realtime_avatar.config import Settings
    from realtime_avatar.models import check_profile_weights
    from realtime_avatar.pipeline import AvatarPipeline, MediaPart

    logs.new_request_id()
    if args.output.suffix.lower() != ".mp4":
        raise InputError("the output path must end in .mp4", code="bad_output")
    overrides: dict[str, object] = {}
    if args.size or args.seed is not None:
        render = Settings().render.model_copy()
        render.size = args.size or render.size
        render.seed = render.seed if args.seed is None else args.seed
        overrides["render"] = render
    settings = Settings(**overrides)
    missing = check_profile_weights(settings)
    if missing:
        # Say which weights are missing now, rather than fail deep inside a model load.
        raise ModelUnavailableError("the configured engines lack weights:\n  " + "\n  ".join(missing))
    pipeline = AvatarPipeline(settings)

    started = time.perf_counter()
    print("loading models...", file=sys.stderr)
    pipeline.warm_up()
    load_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    print("preparing portrait and voice...", file=sys.stderr)
    portrait, reference = pipeline.prepare_avatar(args.image, args.motion_video)
    if reference is not None:
        print(f"motion from the video: {reference.summary()}", file=sys.stderr)
    voice = pipeline.prepare_voice(args.voice)
    prepare_ms = (time.perf_counter() - started) * 1000

    clauses = 0

    def progress(part: MediaPart) -> None:
        nonlocal clauses
        if part.text:
            clauses += 1
            print(f"  [{clauses}] {part.language} {part.audio_seconds:4.1f} s  {part.text}", file=sys.stderr)

    print("rendering...", file=sys.stderr)
    report = pipeline.render_mp4(args.text, args.lang, args.output, portrait=portrait, voice=voice,
                                 progress=progress, reference=reference)
    timings = report.timings_ms
    print(f"wrote {report.path} ({report.audio_seconds:.2f} s, {report.frames} frames, "
          f"{portrait.size}x{portrait.size} @ {pipeline.settings.render.fps} fps)")
    print(f"load_ms={load_ms:.0f} prepare_ms={prepare_ms:.0f} tts_ms={timings.get('tts_ms', 0):.0f} "
          f"avatar_render_ms={timings.get('avatar_render_ms', 0):.0f} "
          f"encode_ms={timings.get('encode_ms', 0):.0f} "
          f"total_generation_ms={timings['total_generation_ms']:.0f} rtf={report.real_time_factor:.3f}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    from graphs import launch

    profile = args.profile or os.environ.get("AVATAR_PROFILE", "cpu")
    try:
        return launch.main(profile, args.config, args.print_config, args.port, args.host)
    except ValueError as exc:
        print(f"error [bad_config]: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _models(args: argparse.Namespace) -> int:
    from realtime_avatar import models
    from realtime_avatar.config import Settings

    if args.action == "check":
        settings = Settings(profile=args.profile) if args.profile else Settings()
        missing = models.check_profile_weights(settings)
        for line in missing:
            print(line)
        if not missing:
            print(f"profile {settings.profile}: every weight its engines need is present")
        return 1 if missing else 0

    root = (args.to or models.default_root()).expanduser()
    if args.action == "list":
        for entry in models.REGISTRY.values():
            bad = len(models.verify(entry, root / entry.subdir, hashes=False).problems)
            state = f"{bad} of {len(entry.files)} missing/bad" if bad else "present"
            print(f"{entry.name:<15} {entry.repo_id:<30} {state:<16} {entry.license}")
        print(f"root: {root}")
        return 0
    if args.action == "fetch":
        entry = models.REGISTRY[args.name]
        result = models.fetch(entry, root, source=args.source, progress=not args.quiet)
        print(models.format_report(result.report))
        return 0 if result.report.complete else 1
    names = [args.name] if args.name else list(models.REGISTRY)
    reports = [models.verify(models.REGISTRY[n], root / models.REGISTRY[n].subdir) for n in names]
    print("\n".join(models.format_report(r) for r in reports))
    return 0 if all(r.complete for r in reports) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level.upper())
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "chat":
            from realtime_avatar import chat_cli

            return chat_cli.run(args)
        if args.command == "cost":
            from realtime_avatar import cost_cli

            return cost_cli.run(args)
        return _models(args) if args.command == "models" else _render(args)
    except InputError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModelUnavailableError as exc:
        print(f"error [{exc.code}]: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        logging.getLogger("realtime_avatar").warning("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
