"""``python -m benchmarks.realtime_listening``: what a call that only listens costs the realtime replica.

The realtime replica's CPU time (``/proc/<pid>/stat`` utime + stime; the replica is the Ray worker
titled ``ray::ServeReplica:<app>:Realtime``) over ``--seconds`` of wall time, in two states, each
``--repeats`` times and interleaved: *idle* (no call) and *listening* (one headless aiortc call,
``realtime_avatar.rtc.client.RealtimeCall``, connected for a second first, whose microphone sends only
its -70 dBFS noise floor; the avatar sends its idle loop and silence back). Reported as % of one core,
median (and min / max) over the repeats.

``--compare REV`` measures the code of a git revision the same way in the same run (its tree is
exported with ``git archive`` into a temporary folder and the runtime started from there), before the
working tree's: old and new side by side. Each runtime is the cpu profile on a free loopback port,
started in a child process (so its code is the one under test, not this process's imports).

Prints Markdown and writes it with every raw number to ``out/bench/realtime_listening.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.__main__ import machine

ROOT = Path(__file__).resolve().parents[1]
REPLICA_TITLE = "ServeReplica:"
REALTIME = ":Realtime"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The child that runs a runtime: prints its base URL, serves until its stdin closes.
SERVE = """
import sys
from realtime_avatar.rtc.harness import serve_cpu
with serve_cpu() as base:
    print("BASE " + base, flush=True)
    sys.stdin.read()
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def realtime_pid() -> int:
    """The realtime replica's process: the one Ray worker whose title names the Realtime deployment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if REPLICA_TITLE in title and REALTIME in title.split()[0]:
                found.append(int(entry.name))
    if len(found) != 1:
        raise RuntimeError(f"expected one realtime replica process, found {found}")
    return found[0]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


@contextlib.contextmanager
def runtime(tree: Path, env: dict[str, str]) -> Iterator[str]:
    """The cpu profile served from ``tree`` in a child process; its base URL."""
    child_env = dict(os.environ) | env | {"PYTHONPATH": str(tree)}
    proc = subprocess.Popen([sys.executable, "-c", SERVE], cwd=tree, env=child_env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("BASE "):
                yield line.split()[1]
                break
        else:
            raise RuntimeError(f"the runtime in {tree} did not start (exit {proc.wait()})")
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sample(pid: int, seconds: float) -> float:
    """% of one core the process used over the next ``seconds``."""
    cpu, wall = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - cpu) / (time.monotonic() - wall)


async def listening(base: str, pid: int, seconds: float, settle_s: float) -> dict[str, Any]:
    """One call that only listens: connect, ``settle_s`` of media, then ``seconds`` measured."""
    from realtime_avatar.rtc import protocol
    from realtime_avatar.rtc.client import RealtimeCall

    async with RealtimeCall(base, "en", keep_video=False) as call:
        await call.wait_event(protocol.CALL_STARTED, timeout_s=30)
        await asyncio.sleep(settle_s)
        frames, packets = len(call.recording.video.pts), len(call.recording.audio.pts)
        cpu, wall = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        used, elapsed = cpu_seconds(pid) - cpu, time.monotonic() - wall
        frames = len(call.recording.video.pts) - frames
        packets = len(call.recording.audio.pts) - packets
    return {"pct": round(100 * used / elapsed, 2), "fps": round(frames / elapsed, 2),
            "audio_pps": round(packets / elapsed, 1)}


def measure(label: str, tree: Path, env: dict[str, str], seconds: float, repeats: int,
            settle_s: float) -> dict[str, Any]:
    print(f"{label}: starting the runtime from {tree}...", flush=True)
    with runtime(tree, env) as base:
        pid = realtime_pid()
        code = Path(f"/proc/{pid}/cwd").resolve()
        asyncio.run(listening(base, pid, 3.0, 1.0))  # warm-up: aiortc's and the codecs' first-call costs
        time.sleep(2.0)
        rows = []
        for k in range(repeats):
            before = load()
            idle = sample(pid, seconds)
            call = asyncio.run(listening(base, pid, seconds, settle_s))
            time.sleep(1.0)  # the call's teardown is not the next idle sample's
            rows.append({"idle_pct": round(idle, 2), **{f"call_{k2}": v for k2, v in call.items()},
                         "load": before})
            print(f"  {k + 1}/{repeats}: idle {idle:.2f}%, listening {call['pct']:.2f}% "
                  f"({call['fps']} fps, {call['audio_pps']} audio packets/s), load {before}", flush=True)
    return {"label": label, "tree": str(tree), "replica_cwd": str(code), "rows": rows,
            "idle_pct": _spread([r["idle_pct"] for r in rows]),
            "listening_pct": _spread([r["call_pct"] for r in rows]),
            "net_pct": _spread([r["call_pct"] - r["idle_pct"] for r in rows]),
            "fps": statistics.median(r["call_fps"] for r in rows),
            "audio_pps": statistics.median(r["call_audio_pps"] for r in rows)}


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


@contextlib.contextmanager
def exported(rev: str) -> Iterator[Path]:
    """The tree of ``rev`` in a temporary folder (``git archive``: nothing in the checkout changes)."""
    with tempfile.TemporaryDirectory(prefix="listening-") as folder:
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        yield Path(folder)


def markdown(result: dict[str, Any]) -> str:
    out = [f"## A listening call's cost ({result['date']})", "",
           f"{result['machine']}; {result['seconds']:g} s per sample, {result['repeats']} repeats "
           f"interleaved (idle, call); load average {result['load_before']} before, "
           f"{result['load_after']} after", "",
           "| code | idle replica | listening call | call - idle | video fps | audio packets/s |",
           "|---|---|---|---|---|---|"]
    for m in result["runs"]:
        def cell(s: dict[str, float]) -> str:
            return f"{s['median']:.1f}% ({s['min']:.1f}-{s['max']:.1f})"
        out.append(f"| {m['label']} | {cell(m['idle_pct'])} | {cell(m['listening_pct'])} | "
                   f"{cell(m['net_pct'])} | {m['fps']} | {m['audio_pps']} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="wall time per sample")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=1.0, help="media before a call's sample starts, s")
    parser.add_argument("--compare", metavar="REV", help="also measure this git revision, first")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="runtime settings for both (e.g. AVATAR_REALTIME__IDLE_FRAME_STRIDE=1)")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args(argv)
    env = {"AVATAR_REALTIME__IDLE_TIMEOUT_S": "3600"} | dict(kv.split("=", 1) for kv in args.env)
    result: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                              "seconds": args.seconds, "repeats": args.repeats, "env": env,
                              "load_before": load(), "runs": []}
    if args.compare:
        rev = subprocess.run(["git", "rev-parse", "--short", args.compare], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
        with exported(rev) as tree:
            result["runs"].append(measure(f"{rev} ({args.compare})", tree, env, args.seconds, args.repeats,
                                          args.settle))
    result["runs"].append(measure("working tree", ROOT, env, args.seconds, args.repeats, args.settle))
    result["load_after"] = load()
    text = markdown(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "realtime_listening.md").write_text(text)
    (args.out / "realtime_listening.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
