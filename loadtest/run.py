"""``make loadtest``: locust, headless, against the API, with CSV output and a summary table.

Against ``--host`` if something answers there; otherwise it starts the cpu profile (``avatar serve``)
for the run and stops it afterwards. Exits non-zero if locust saw any failed request.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from graphs.launch import is_ready

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_HOST = "http://127.0.0.1:8000"


def run_locust(host: str, users: int, duration: str, csv_prefix: Path) -> tuple[int, list[dict[str, str]]]:
    """Run locust headless; return its exit code and the rows of its ``_stats.csv``."""
    csv_prefix.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
        "-u", str(users), "-r", str(users), "-t", duration, "--stop-timeout", "60",
        "--csv", str(csv_prefix), "--only-summary", "--exit-code-on-error", "1",
    ]
    code = subprocess.run(command, check=False).returncode
    stats = csv_prefix.with_name(csv_prefix.name + "_stats.csv")
    rows = list(csv.DictReader(stats.open())) if stats.exists() else []
    return code, rows


def summary(rows: list[dict[str, str]]) -> str:
    lines = ["| type | name | requests | failures | req/s | p50 ms | p95 ms |", "|---" * 7 + "|"]
    for row in rows:
        lines.append(
            f"| {row['Type']} | {row['Name']} | {row['Request Count']} | {row['Failure Count']} | "
            f"{float(row['Requests/s']):.2f} | {row['50%']} | {row['95%']} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def server_at(host: str, timeout_s: float = 180) -> Iterator[None]:
    """Use the server at ``host``, or start the cpu profile for the duration of the block."""
    if is_ready(host):
        yield
        return
    port = urllib.parse.urlsplit(host).port or 80
    print(f"nothing answers at {host}: starting `avatar serve --profile cpu --port {port}`", file=sys.stderr)
    avatar = Path(sys.executable).with_name("avatar")
    process = subprocess.Popen([str(avatar), "serve", "--profile", "cpu", "--port", str(port)],
                               start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not is_ready(host):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the API server did not become ready")
            time.sleep(1)
        yield
    finally:
        os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(60)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--duration", default="60s", help="locust run time, e.g. 30s, 2m")
    parser.add_argument("--csv", type=Path, default=Path("out/loadtest/locust"), help="CSV prefix")
    args = parser.parse_args(argv)
    with server_at(args.host):
        code, rows = run_locust(args.host, args.users, args.duration, args.csv)
    print(summary(rows))
    print(f"CSV: {args.csv}_stats.csv, {args.csv}_stats_history.csv, {args.csv}_failures.csv")
    return code


if __name__ == "__main__":
    sys.exit(main())
