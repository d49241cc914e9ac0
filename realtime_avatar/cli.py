"""``avatar`` command line: render a script to a talking-head MP4 with the configured engines."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

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
    render.add_argument("--voice", type=Path, help="reference voice audio, at least 2 s (default: bundled)")
    render.add_argument("--size", type=int, choices=(256, 360), help="output square in px (default: config)")
    render.add_argument("--seed", type=int, help="motion seed (default: config)")
    render.add_argument("-o", "--output", type=Path, required=True, help="MP4 path to write")
    return parser


def _render(args: argparse.Namespace) -> int:
    from realtime_avatar.config import Settings
    from realtime_avatar.pipeline import AvatarPipeline, RenderedChunk

    overrides: dict[str, object] = {}
    if args.size or args.seed is not None:
        render = Settings().render.model_copy()
        render.size = args.size or render.size
        render.seed = render.seed if args.seed is None else args.seed
        overrides["render"] = render
    pipeline = AvatarPipeline(Settings(**overrides))
    if args.output.suffix.lower() != ".mp4":
        raise InputError("the output path must end in .mp4", code="bad_output")

    started = time.perf_counter()
    print("preparing portrait and voice...", file=sys.stderr)
    portrait = pipeline.prepare_portrait(args.image)
    voice = pipeline.prepare_voice(args.voice)
    prepare_ms = (time.perf_counter() - started) * 1000

    def progress(chunk: RenderedChunk) -> None:
        if chunk.text:
            print(f"  [{chunk.index + 1}] {chunk.language} {chunk.audio_seconds:4.1f} s  {chunk.text}",
                  file=sys.stderr)

    print("rendering...", file=sys.stderr)
    report = pipeline.render_mp4(args.text, args.lang, args.output, portrait=portrait, voice=voice,
                                 progress=progress)
    timings = report.timings_ms
    print(f"wrote {report.path} ({report.audio_seconds:.2f} s, {report.frames} frames, "
          f"{portrait.size}x{portrait.size} @ {pipeline.settings.render.fps} fps)")
    print(f"prepare_ms={prepare_ms:.0f} tts_ms={timings.get('tts_ms', 0):.0f} "
          f"avatar_render_ms={timings.get('avatar_render_ms', 0):.0f} encode_ms={timings.get('encode_ms', 0):.0f} "
          f"total_generation_ms={timings['total_generation_ms']:.0f} rtf={report.real_time_factor:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level.upper())
    try:
        return _render(args)
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
