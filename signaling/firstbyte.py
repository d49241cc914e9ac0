"""Measure what the signaling proxy adds to the first byte of a streamed reply.

``python -m signaling.firstbyte --runtime-url http://127.0.0.1:8000 --signaling-url http://127.0.0.1:8080``

Opens a conversation through the service, then asks for its greeting (an NDJSON stream whose first line
the runtime writes at once: the cached clips follow) alternately straight from the runtime and through
the service, timing request-to-first-byte, and prints the medians and their difference. Each greeting
counts against the per-IP message limit: run the service with SIGNALING_MESSAGES_PER_MINUTE=10000."""

from __future__ import annotations

import argparse
import statistics
import time

import httpx


def first_byte_ms(http: httpx.Client, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    with http.stream("GET", url, headers=headers) as response:
        response.raise_for_status()
        next(response.iter_raw())
        return (time.perf_counter() - started) * 1000  # leaving now cancels the rest, on purpose


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m signaling.firstbyte", description=__doc__)
    parser.add_argument("--runtime-url", required=True)
    parser.add_argument("--signaling-url", required=True)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    with httpx.Client(timeout=60, trust_env=False) as http:
        created = http.post(f"{args.signaling_url}/avatar/api/session", json={"language": "auto"})
        created.raise_for_status()
        session = created.json()
        direct_url = f"{args.runtime_url}/v1/chat/sessions/{session['session_id']}/greeting"
        proxied_url = f"{args.signaling_url}/avatar/api/greeting"
        auth = {"Authorization": f"Bearer {session['token']}"}
        direct, proxied = [], []
        for i in range(args.runs + 2):
            d, p = first_byte_ms(http, direct_url, {}), first_byte_ms(http, proxied_url, auth)
            if i >= 2:  # the first two open connections and warm caches
                direct.append(d)
                proxied.append(p)
        http.delete(f"{args.signaling_url}/avatar/api/session", headers=auth)
    pairs = sorted(p - d for p, d in zip(proxied, direct, strict=True))
    print(f"first byte over {args.runs} runs: direct median {statistics.median(direct):.1f} ms, "
          f"through signaling {statistics.median(proxied):.1f} ms; overhead median "
          f"{statistics.median(proxied) - statistics.median(direct):.1f} ms "
          f"(paired median {statistics.median(pairs):.1f} ms, "
          f"p90 {pairs[int(0.9 * (len(pairs) - 1))]:.1f} ms)")


if __name__ == "__main__":
    main()
