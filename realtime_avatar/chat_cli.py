"""``avatar chat``: talk to the avatar from a terminal; each reply's text is printed as it streams and
its clips are written to a folder (one fragmented MP4 per sentence, playable on their own).

It talks to a running server (``--url``, e.g. the one ``make run`` starts); without one it starts the
cpu profile in this process for the length of the chat.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from realtime_avatar.chat_client import ChatApiError, ChatClient, Reply, collect


def add_parser(commands: argparse._SubParsersAction) -> None:
    chat = commands.add_parser("chat", help="chat with the avatar: replies as text and clips in a folder")
    chat.add_argument("--url", help="a running server (default: start the cpu profile here)")
    chat.add_argument("--lang", default="auto", help="fix the reply language: en, zh, es (default: auto)")
    chat.add_argument("-m", "--message", action="append", default=[],
                      help="a message to send (repeatable); without any, read lines from stdin")
    chat.add_argument("--out", type=Path, default=Path("out/chat"), help="folder for the clips")
    chat.add_argument("--greet", action="store_true", help="start with the persona's greeting clip")


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[str]:
    if url:
        yield url.rstrip("/")
        return
    from graphs.launch import free_port, resolve, running, wait_ready

    print("starting the avatar (cpu profile; the first start loads the models)...", file=sys.stderr)
    config = resolve("cpu")
    config["http_options"]["port"] = free_port()
    config["applications"][0]["args"]["log_level"] = "WARNING"
    with running(config) as base:
        wait_ready(base)
        yield base


def _messages(args: argparse.Namespace, stdin: TextIO) -> Iterator[str]:
    if args.message:
        yield from args.message
        return
    if stdin.isatty():
        print("type a message and press Enter (Ctrl-D ends the chat)", file=sys.stderr)
    for line in stdin:
        if line.strip():
            yield line.strip()


def _show(reply_events: Iterator[dict], folder: Path, turn: int) -> Reply:
    def printed() -> Iterator[dict]:
        for item in reply_events:
            if item["type"] == "text":
                print(item["delta"], end="", flush=True)
            yield item

    reply = collect(printed())
    print()
    for index, clip in enumerate(reply.clips):
        (folder / f"turn{turn:02d}_clip{index:02d}.mp4").write_bytes(clip)
    end = reply.end
    if end.get("type") == "error" or any(e["type"] == "error" for e in reply.events):
        error = next(e for e in reply.events if e["type"] == "error")["error"]
        print(f"  [error {error['code']}: {error['message']}]", file=sys.stderr)
    first = f"{reply.first_clip_s:.2f} s" if reply.first_clip_s is not None else "-"
    print(f"  [{len(reply.clips)} clips in {folder}/turn{turn:02d}_*; first clip after {first}; "
          f"spoken: {reply.text!r}]", file=sys.stderr)
    return reply


def run(args: argparse.Namespace, stdin: TextIO = sys.stdin) -> int:
    with _server(args.url) as base, ChatClient(base) as client:
        session = client.create_session(args.lang)
        folder = args.out / session["session_id"][:12]
        folder.mkdir(parents=True, exist_ok=True)
        print(f"conversation {session['session_id']} ({session['language']}); clips go to {folder}",
              file=sys.stderr)
        turn = 0
        if args.greet:
            _show(client.greeting_events(session["session_id"]), folder, turn)
        for message in _messages(args, stdin):
            turn += 1
            print(f"> {message}", file=sys.stderr)
            try:
                _show(client.events(session["session_id"], message, args.lang), folder, turn)
            except ChatApiError as exc:
                print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
                if exc.status in (404, 410):
                    return 2
        with contextlib.suppress(ChatApiError):
            client.end_session(session["session_id"])
    return 0
