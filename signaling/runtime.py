"""The GPU runtime as this service sees it: an HTTP client, and whether it is awake.

The runtime scales to zero. A cold one either refuses connections (a local process still starting) or
holds requests until an instance is up (Cloud Run), so nobody's request waits on it here: one background
task per wake-up polls ``/readyz`` while callers get ``waking`` with the seconds so far, at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from . import gcp_auth
from .logs import event

log = logging.getLogger("signaling.runtime")

READY_TRUST_S = 15.0  # a 200 from /readyz (or a good answer to a call) counts as "awake" this long
PROBE_TIMEOUT_S = 1.0  # the inline check before a caller is told "waking"
POLL_INTERVAL_S = 1.0
DOWN_STICKY_S = 30.0  # a failed wake-up is reported to each waiting caller once, for at most this long


@dataclass(frozen=True)
class RuntimeState:
    state: str  # "ready", "waking" or "down"
    waited_s: float = 0.0

    def as_dict(self, timeout_s: float) -> dict[str, Any]:
        return {"state": self.state, "waited_s": round(self.waited_s, 1), "timeout_s": timeout_s}


class Runtime:
    def __init__(self, base_url: str, wake_timeout_s: float, stream_idle_timeout_s: float,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.wake_timeout_s = wake_timeout_s
        self.clock = clock
        # A private Cloud Run runtime takes only requests with an ID token (SIGNALING_RUNTIME_AUTH).
        self.auth = gcp_auth.from_env(self.base_url)
        # The read timeout bounds the silence between two chunks of a reply, not the reply itself.
        self.http = httpx.AsyncClient(
            base_url=self.base_url, transport=transport, trust_env=False, auth=self.auth,
            timeout=httpx.Timeout(connect=5.0, read=stream_idle_timeout_s, write=10.0, pool=5.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=32),
            # Accept-Encoding: bytes pass through as the runtime wrote them. The runtime's key (serve.api_key)
            # goes in X-API-Key: Authorization may carry the Cloud Run ID token.
            headers={"Accept-Encoding": "identity", **({"X-API-Key": api_key} if api_key else {})},
        )
        self._ready_until = 0.0
        self._wake: asyncio.Task[None] | None = None
        self._wake_started = 0.0
        self._down: tuple[float, float, set[str]] | None = None  # (reported until, waited_s, callers told)
        self._checking = asyncio.Lock()  # one inline probe at a time: concurrent callers share its outcome

    async def close(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._wake
        await self.http.aclose()
        if self.auth is not None:
            await self.auth.aclose()

    def mark_ready(self) -> None:
        self._ready_until = self.clock() + READY_TRUST_S

    def mark_cold(self) -> None:
        """A call failed to reach the runtime: the next caller checks again (and wakes it)."""
        self._ready_until = 0.0

    async def _probe(self, timeout_s: float) -> bool:
        try:
            response = await self.http.get("/readyz", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def state(self, caller: str = "-") -> RuntimeState:
        """Awake, waking (since when), or down (a wake-up ran past the timeout). Never waits long.

        Every caller (a client) waiting on a failed wake-up is told "down" once; its next request (the
        page's retry) starts a new wake-up."""
        async with self._checking:
            return await self._state(caller)

    async def _state(self, caller: str) -> RuntimeState:
        now = self.clock()
        if now < self._ready_until:
            return RuntimeState("ready")
        if self._wake is not None and not self._wake.done():
            return RuntimeState("waking", now - self._wake_started)
        if self._down is not None:
            until, waited, told = self._down
            if now < until and caller not in told:
                told.add(caller)
                return RuntimeState("down", waited)
            self._down = None
        if await self._probe(PROBE_TIMEOUT_S):
            self.mark_ready()
            return RuntimeState("ready")
        self._wake_started = now
        self._wake = asyncio.create_task(self._wake_up())
        event(log, "runtime_waking", runtime=self.base_url)
        return RuntimeState("waking", self.clock() - now)

    async def _wake_up(self) -> None:
        # Each /readyz is itself what wakes a scale-to-zero service; a cold one may hold it a while.
        deadline = self._wake_started + self.wake_timeout_s
        while (left := deadline - self.clock()) > 0:
            if await self._probe(max(0.5, min(10.0, left))):
                self.mark_ready()
                event(log, "runtime_awake", waited_s=round(self.clock() - self._wake_started, 1))
                return
            await asyncio.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - self.clock())))
        waited = self.clock() - self._wake_started
        self._down = (self.clock() + DOWN_STICKY_S, waited, set())
        event(log, "runtime_down", level=logging.WARNING, waited_s=round(waited, 1), runtime=self.base_url)
