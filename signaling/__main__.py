"""``python -m signaling --runtime-url URL --port PORT``: run the service with uvicorn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

from . import logs
from .app import create_app
from .config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m signaling", description=__doc__)
    parser.add_argument("--runtime-url", help="the runtime's base URL (SIGNALING_RUNTIME_URL)")
    parser.add_argument("--host", help="interface to listen on (SIGNALING_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (SIGNALING_PORT, default 8080)")
    parser.add_argument("--web-dir", type=Path, help="the built page (SIGNALING_WEB_DIR, default web/dist)")
    parser.add_argument("--log-level", help="SIGNALING_LOG_LEVEL, default INFO")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(runtime_url=args.runtime_url, host=args.host, port=args.port,
                                     web_dir=args.web_dir, log_level=args.log_level)
    except ValueError as exc:
        print(f"error [config]: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    # The page's URL first: it is what a person running this wants to open.
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    print(f"avatar page: http://{shown}:{settings.port}/avatar/ (runtime {settings.runtime_url})", flush=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                access_log=False, proxy_headers=False, server_header=False, timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
