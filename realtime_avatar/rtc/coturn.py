"""A local coturn (Debian's ``turnserver``) with the repo's own config, for relay-only calls on loopback:
the tests and ``benchmarks/realtime.py --transport relay`` start one; ``make turn`` runs the same thing in
the foreground. Production runs the same config on the TURN VM (infra/turn.tf)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "infra" / "coturn" / "turnserver.conf"
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class LocalRelay:
    """A relay's port and secret, chosen before the runtime that uses it is configured."""

    port: int
    secret: str

    @classmethod
    def pick(cls) -> LocalRelay:
        """A loopback port free now (coturn takes it for both UDP and TCP) and a fresh secret."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return cls(probe.getsockname()[1], secrets.token_urlsafe(24))

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def runtime_env(self, policy: str = "all") -> dict[str, str]:
        """The runtime's settings for this relay (``realtime.turn``, ``realtime.ice_transport_policy``)."""
        return {"AVATAR_REALTIME__TURN__URLS": json.dumps([self.url]),
                "AVATAR_REALTIME__TURN__SECRET": self.secret, "AVATAR_REALTIME__ICE_TRANSPORT_POLICY": policy}

    def running(self) -> contextlib.AbstractContextManager[str]:
        return running(self.port, self.secret)


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no relay outlives the test or benchmark


@contextlib.contextmanager
def running(port: int, secret: str, realm: str = "avatar.test") -> Iterator[str]:
    """coturn on 127.0.0.1:``port`` with ``use-auth-secret`` under ``secret``; yields its ``turn:`` URL.
    Loopback peers are allowed, which a local relay needs (never in production); its user database is a
    temporary file."""
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError("coturn is missing: apt-get install coturn (scripts/setup-browser.sh does)")
    with tempfile.TemporaryDirectory(prefix="coturn-") as scratch:
        proc = subprocess.Popen(
            [binary, "-c", str(CONFIG), f"--static-auth-secret={secret}", f"--realm={realm}",
             "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
             "--allow-loopback-peers", f"--db={scratch}/turndb", f"--pidfile={scratch}/turnserver.pid"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:  # its TCP listener comes up with the UDP one
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"coturn did not start on port {port}") from None
                    time.sleep(0.05)
            yield f"turn:127.0.0.1:{port}?transport=udp"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main() -> int:
    """``make turn``: the relay on 127.0.0.1:3478 (TURN_PORT) until Ctrl-C, its secret from TURN_SECRET."""
    import os

    secret = os.environ.get("TURN_SECRET", "")
    if not secret:
        raise SystemExit("set TURN_SECRET (e.g. export TURN_SECRET=$(openssl rand -hex 24))")
    with running(int(os.environ.get("TURN_PORT", "3478")), secret, realm="avatar.local") as url:
        print(f"TURN relay at {url} (Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
