"""``python -m benchmarks.hardening``: what a hostile client costs the served graph (issue 15).

1. Memory per oversized request: RSS of Serve's proxy and of the ingress replica before and after a
   200 MB JSON body is refused, sent with its ``Content-Length`` and sent chunked (no length), and the
   time until the 413 arrives. Median over N of each.
2. The slow-client case: 64 uploads from 64 client addresses send their headers and a few bytes, then
   nothing; ``/healthz`` and ``/readyz`` latency while they are open (vs none open), and when each stalled
   upload gets its 408 (``limits.body_timeout_s``, set to ``--body-timeout`` here). Median over N rounds.

The server runs in this process's Ray (the cpu profile on a free port). Prints Markdown and writes it
with the raw numbers to ``out/bench_hardening.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.__main__ import machine
from graphs.launch import free_port, resolve, running, wait_ready

BODY_BYTES = 200 * 1024 * 1024
CHUNK = b'{"text": "' + b"a" * (1024 * 1024 - 10)
HALF_SENT = 64


def _serve_processes() -> dict[str, psutil.Process]:
    """Serve's proxy and the ingress replica of this process's Ray, by role."""
    import ray

    found: dict[str, psutil.Process] = {}
    for _, process in ray._private.worker._global_node.live_processes():
        for child in psutil.Process(process.pid).children(recursive=True):
            name = " ".join(child.cmdline()[:1])
            if "ProxyActor" in name:
                found["proxy"] = child
            elif "ServeReplica:avatar:Ingress" in name:
                found["ingress"] = child
    return found


def _rss_mb(processes: dict[str, psutil.Process]) -> dict[str, float]:
    return {role: round(p.memory_info().rss / 2**20, 1) for role, p in processes.items()}


def _send_oversized(base: str, chunked: bool) -> tuple[int, float, int]:
    """(status, seconds to the answer, bytes the server let us send before it answered)."""
    url = httpx.URL(base)
    with socket.create_connection((url.host, url.port), timeout=60) as sock:
        length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BODY_BYTES}"
        sock.sendall(f"POST /v1/tts HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
                     f"{length}\r\n\r\n".encode())
        started, sent = time.perf_counter(), 0
        sock.setblocking(False)
        answer = b""
        while sent < BODY_BYTES and b"\r\n\r\n" not in answer:
            piece = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if chunked else CHUNK
            try:
                sent += sock.send(piece)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break  # the server closed: it answered and stopped reading
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
        sock.setblocking(True)
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        took = time.perf_counter() - started
    return int(answer.split()[1]) if answer else 0, took, sent


def bench_oversized(base: str, repeats: int) -> dict[str, Any]:
    processes = _serve_processes()
    results: dict[str, Any] = {}
    for chunked in (False, True):
        growth: dict[str, list[float]] = {role: [] for role in processes}
        times, sent, statuses = [], [], set()
        for _ in range(repeats):
            before = _rss_mb(processes)
            status, took, accepted = _send_oversized(base, chunked)
            time.sleep(0.5)
            after = _rss_mb(processes)
            statuses.add(status)
            times.append(took)
            sent.append(accepted)
            for role in processes:
                growth[role].append(after[role] - before[role])
        results["chunked" if chunked else "content_length"] = {
            "status": sorted(statuses), "answer_ms": round(statistics.median(times) * 1000, 1),
            "sent_mb_median": round(statistics.median(sent) / 2**20, 2),
            "rss_growth_mb": {role: round(statistics.median(g), 1) for role, g in growth.items()},
            "rss_after_mb": _rss_mb(processes),
        }
    return results


def _half_sent(base: str, source: str) -> socket.socket:
    url = httpx.URL(base)
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect((url.host, url.port))
    sock.sendall(f"POST /v1/voices HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: audio/wav\r\n"
                 "Content-Length: 1000000\r\n\r\nRIFF".encode())
    return sock


def _latency(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    client.get(path).raise_for_status()
    return time.perf_counter() - started


def bench_slow_clients(base: str, rounds: int, body_timeout_s: float) -> dict[str, Any]:
    idle, held, answered = [], [], []
    with httpx.Client(base_url=base, timeout=body_timeout_s + 60) as client:
        for _ in range(rounds):
            idle += [_latency(client, "/healthz"), _latency(client, "/readyz")]
            started = time.perf_counter()
            socks = [_half_sent(base, f"127.0.3.{i + 1}") for i in range(HALF_SENT)]
            time.sleep(0.5)
            held += [_latency(client, "/healthz"), _latency(client, "/readyz")]
            for sock in socks:
                sock.settimeout(body_timeout_s + 30)
                head = sock.recv(4096)
                if b" 408 " in head.split(b"\r\n", 1)[0]:
                    answered.append(time.perf_counter() - started)
                sock.close()
    return {"half_sent": HALF_SENT, "body_timeout_s": body_timeout_s,
            "health_ms_none_open": round(statistics.median(idle) * 1000, 1),
            "health_ms_64_open": round(statistics.median(held) * 1000, 1),
            "health_ms_64_open_max": round(max(held) * 1000, 1),
            "answered_408": f"{len(answered)}/{HALF_SENT * rounds}",
            "408_after_s_median": round(statistics.median(answered), 2) if answered else None}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Machine: {report['machine']}; {report['date']}.", "",
             "| oversized body (200 MB JSON) | answer | sent before the answer | proxy RSS growth | "
             "ingress RSS growth |", "|---|---|---|---|---|"]
    for name, row in report["oversized"].items():
        growth = row["rss_growth_mb"]
        lines.append(f"| {name.replace('_', ' ')} | {'/'.join(map(str, row['status']))} in "
                     f"{row['answer_ms']} ms | {row['sent_mb_median']} MB | {growth.get('proxy')} MB | "
                     f"{growth.get('ingress')} MB |")
    slow = report["slow_clients"]
    lines += ["", "| slow clients | result |", "|---|---|",
              f"| /healthz + /readyz, none open (median) | {slow['health_ms_none_open']} ms |",
              f"| /healthz + /readyz, {slow['half_sent']} half-sent uploads open (median / max) | "
              f"{slow['health_ms_64_open']} / {slow['health_ms_64_open_max']} ms |",
              f"| stalled uploads answered 408 | {slow['answered_408']}, median "
              f"{slow['408_after_s_median']} s after they started "
              f"(body_timeout_s {slow['body_timeout_s']:g}) |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--body-timeout", type=float, default=10.0)
    args = parser.parse_args()
    os.environ["AVATAR_LIMITS__BODY_TIMEOUT_S"] = str(args.body_timeout)  # the proxy reads it at start
    config = resolve("cpu")
    config["http_options"]["port"] = free_port()
    config["applications"][0]["args"]["log_level"] = "WARNING"
    with running(config) as base:
        wait_ready(base)
        report = {"machine": machine(), "date": datetime.now(UTC).strftime("%Y-%m-%d"),
                  "oversized": bench_oversized(base, args.repeats),
                  "slow_clients": bench_slow_clients(base, args.rounds, args.body_timeout)}
    text = markdown(report)
    print(text)
    out = Path("out")
    out.mkdir(exist_ok=True)
    (out / "bench_hardening.md").write_text(text + "\n")
    (out / "bench_hardening.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
