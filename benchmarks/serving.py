"""``make bench-serve``: what Ray Serve costs and what streaming buys, on the cpu profile.

1. Serve overhead: the same ~2 s render through ``POST /v1/render`` and as a direct engine call
   (``AvatarPipeline.render_mp4`` in this process), interleaved, median of N each.
2. Streaming: time to the first fragment (first ``moof`` box received) of a streamed 3-sentence render
   vs the time to the whole MP4 of the same text, interleaved, median of N.
3. Locust at 1, 2 and 4 users: throughput and p50/p95 per endpoint.

The server runs in this process's Ray (serve_config.yaml's cpu profile on a free port). Prints Markdown
and writes it with the raw numbers to ``out/bench_serving.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.__main__ import machine
from engines.media.mp4 import fragment_boxes, probe_mp4
from graphs.launch import free_port, resolve, running, wait_ready
from loadtest.run import run_locust
from realtime_avatar.pipeline import AvatarPipeline

SHORT = "Hello, it is nice to meet you."  # about 2 s of speech with the default voice
THREE_SENTENCES = ("Hello, welcome to my page. I build realtime avatars that listen and answer. "
                   "Ask me anything about my work.")


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def bench_overhead(client: httpx.Client, pipeline: AvatarPipeline, repeats: int, workdir: Path) -> dict:
    portrait = pipeline.prepare_portrait()
    direct, served, audio_s = [], [], 0.0
    for i in range(repeats + 1):  # the first pair warms both paths up and is not counted
        started = time.perf_counter()
        report = pipeline.render_mp4(SHORT, "en", workdir / "direct.mp4", portrait=portrait)
        direct_s = time.perf_counter() - started
        started = time.perf_counter()
        response = client.post("/v1/render", json={"text": SHORT, "language": "en"})
        served_s = time.perf_counter() - started
        response.raise_for_status()
        (workdir / "served.mp4").write_bytes(response.content)
        if i:
            direct.append(direct_s)
            served.append(served_s)
        audio_s = report.audio_seconds
    served_info = probe_mp4(workdir / "served.mp4")
    d, s = _median_ms(direct), _median_ms(served)
    return {"clip_s": round(audio_s, 2), "served_clip_s": round(served_info.audio[0].duration_s, 2),
            "direct_ms": d, "serve_ms": s, "overhead_ms": round(s - d, 1),
            "overhead_pct_of_total": round(100 * (s - d) / s, 1), "repeats": repeats}


def _streamed(client: httpx.Client) -> tuple[float, float]:
    started = time.perf_counter()
    received, first = bytearray(), None
    with client.stream("POST", "/v1/render", json={"text": THREE_SENTENCES, "language": "en",
                                                   "stream": True}) as response:
        response.raise_for_status()
        for block in response.iter_bytes():
            received += block
            if first is None and "moof" in fragment_boxes(bytes(received)):
                first = time.perf_counter() - started
    assert first is not None and fragment_boxes(bytes(received))[-1] == "mfra"
    return first, time.perf_counter() - started


def bench_streaming(client: httpx.Client, repeats: int) -> dict:
    first_fragment, stream_total, whole = [], [], []
    for i in range(repeats + 1):
        first, total = _streamed(client)
        started = time.perf_counter()
        client.post("/v1/render", json={"text": THREE_SENTENCES, "language": "en"}).raise_for_status()
        if i:
            first_fragment.append(first)
            stream_total.append(total)
            whole.append(time.perf_counter() - started)
    f, w = _median_ms(first_fragment), _median_ms(whole)
    return {"first_fragment_ms": f, "streamed_total_ms": _median_ms(stream_total), "whole_mp4_ms": w,
            "first_fragment_share_of_whole": round(f / w, 2), "repeats": repeats}


def bench_locust(base: str, users: list[int], duration: str, workdir: Path) -> list[dict]:
    """Per user count: locust's rows per endpoint, and a total over the real HTTP requests only (locust's
    own "Aggregated" row also counts the TTFB/DOWNLOAD events, which are not extra requests)."""
    rows = []
    for count in users:
        code, stats = run_locust(base, count, duration, workdir / f"locust_{count}")
        http = []
        for row in stats:
            if row["Name"] == "Aggregated":
                continue
            entry = {"users": count, "exit_code": code, "type": row["Type"], "name": row["Name"],
                     "requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                     "rps": round(float(row["Requests/s"]), 2), "p50_ms": row["50%"], "p95_ms": row["95%"]}
            rows.append(entry)
            if row["Type"] == "POST":
                http.append(entry)
        totals = {key: sum(r[key] for r in http) for key in ("requests", "failures", "rps")}
        rows.append({"users": count, "exit_code": code, "type": "all HTTP", "name": "", **totals,
                     "rps": round(totals["rps"], 2), "p50_ms": "-", "p95_ms": "-"})
    return rows


def markdown(results: dict[str, Any]) -> str:
    o, s = results["overhead"], results["streaming"]
    lines = [
        f"Machine: {results['machine']}. Date: {results['date']}. Profile: cpu (bundled engines, 256 px).",
        "",
        f"Serve overhead, {o['clip_s']} s clip (median of {o['repeats']}, interleaved):",
        "",
        "| path | ms |",
        "|---|---|",
        f"| direct engine call (`AvatarPipeline.render_mp4`) | {o['direct_ms']} |",
        f"| `POST /v1/render` through Serve | {o['serve_ms']} |",
        f"| overhead | {o['overhead_ms']} ms = {o['overhead_pct_of_total']}% of the served total |",
        "",
        f"Streamed 3-sentence render (median of {s['repeats']}):",
        "",
        "| measure | ms |",
        "|---|---|",
        f"| first fragment (`stream=true`) | {s['first_fragment_ms']} |",
        f"| whole streamed response | {s['streamed_total_ms']} |",
        f"| whole MP4 (`stream=false`) | {s['whole_mp4_ms']} |",
        f"| first fragment / whole MP4 | {s['first_fragment_share_of_whole']} |",
        "",
        f"Locust ({results['locust_duration']} per run; each user waits 0.5-1.5 s between calls; for "
        "streamed renders POST is the time to the headers, TTFB to the first body byte, DOWNLOAD to the "
        "last):",
        "",
        "| users | type | name | requests | failures | req/s | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["locust"]:
        lines.append(f"| {row['users']} | {row['type']} | {row['name']} | {row['requests']} | "
                     f"{row['failures']} | {row['rps']} | {row['p50_ms']} | {row['p95_ms']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--duration", default="45s", help="locust run time per user count")
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args(argv)

    config = resolve("cpu")
    config["http_options"]["port"] = free_port()
    config["applications"][0]["args"]["log_level"] = "WARNING"
    pipeline = AvatarPipeline()
    pipeline.warm_up()
    results: dict[str, Any] = {"machine": machine(), "date": datetime.now(UTC).date().isoformat(),
                               "locust_duration": args.duration}
    with tempfile.TemporaryDirectory() as tmp, running(config) as base, \
            httpx.Client(base_url=base, timeout=300) as client:
        workdir = Path(tmp)
        wait_ready(base)
        results["overhead"] = bench_overhead(client, pipeline, args.repeats, workdir)
        results["streaming"] = bench_streaming(client, args.repeats)
        results["locust"] = bench_locust(base, args.users, args.duration, args.out / "loadtest")
    text = markdown(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_serving.md").write_text(text + "\n")
    (args.out / "bench_serving.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
