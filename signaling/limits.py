"""The cost guard: per-client rate limits and the table of open conversations (a cap on how many run at
once and on how long each may last). In memory, per instance: run one signaling instance per runtime
(Cloud Run web ``max-instances=1``), or divide the caps by the instance count."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests in a burst, refilled evenly over a minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)

    def take(self, key: str) -> float:
        """0 if the request may go ahead (and counts it), else the seconds until one would."""
        now = self.clock()
        tokens, updated = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - updated) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_keys:
                self._prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: drop those first, then the oldest.
        full = [k for k, (t, u) in self._buckets.items() if t + (now - u) * self.rate >= self.capacity]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            del self._buckets[min(self._buckets, key=lambda k: self._buckets[k][1])]


@dataclass
class Slot:
    sid: str
    end: float  # unix seconds: the conversation's hard end
    idle_ttl_s: float  # the runtime forgets a session idle this long
    last_seen: float = field(default_factory=time.time)
    call_id: str | None = None  # the live voice call on the runtime (at most one per conversation)
    # Offers of one conversation go one at a time, so "a new call replaces the old" cannot leave two.
    call_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)

    def idle_expired(self, now: float) -> bool:
        # A call is activity even when nobody types: the visitor is talking over WebRTC.
        return self.call_id is None and now - self.last_seen > self.idle_ttl_s


class SessionTable:
    """Open conversations by runtime session id. ``reserve`` before asking the runtime for a session
    (so concurrent requests cannot overshoot the cap while they wait), then ``commit`` or ``release``.
    Voice calls the same way: ``reserve_call`` before an offer goes to the runtime, ``release_call`` once
    it is answered (the call then counts through its slot's ``call_id``)."""

    def __init__(self, max_sessions: int, clock: Callable[[], float] = time.time,
                 max_calls: int | None = None) -> None:
        self.max_sessions = max_sessions
        self.max_calls = max_calls
        self.clock = clock
        self._slots: dict[str, Slot] = {}
        self._pending = 0
        self._offering = 0  # offers on their way to the runtime
        self._call_started: dict[str, float] = {}  # call id -> when this table first saw it
        self._ended: dict[str, float] = {}  # sid -> end: tokens of ended conversations stay refused

    def __len__(self) -> int:
        return len(self._slots)

    def reserve(self) -> bool:
        if len(self._slots) + self._pending >= self.max_sessions:
            return False
        self._pending += 1
        return True

    def release(self) -> None:
        self._pending = max(0, self._pending - 1)

    @property
    def calls(self) -> int:
        """Live calls (one per conversation at most) plus offers still being answered."""
        return sum(1 for s in self._slots.values() if s.call_id is not None) + self._offering

    def reserve_call(self) -> bool:
        if self.max_calls is not None and self.calls >= self.max_calls:
            return False
        self._offering += 1
        return True

    def release_call(self) -> None:
        self._offering = max(0, self._offering - 1)

    def calls_over(self, max_s: float) -> list[Slot]:
        """Slots whose call has lasted ``max_s`` (timed from when it was first seen here: at its offer, or
        at the first sweep for a call begun another way); forgets calls that ended."""
        now = self.clock()
        live = {s.call_id: s for s in self._slots.values() if s.call_id is not None}
        self._call_started = {cid: self._call_started.get(cid, now) for cid in live}
        return [live[cid] for cid, since in self._call_started.items() if now - since >= max_s]

    def call_started(self, call_id: str) -> None:
        self._call_started[call_id] = self.clock()

    def commit(self, sid: str, end: float, idle_ttl_s: float) -> Slot:
        self.release()
        slot = self._slots[sid] = Slot(sid, end, idle_ttl_s, last_seen=self.clock())
        return slot

    def get(self, sid: str, end: float, idle_ttl_s: float) -> Slot | None:
        """The slot of a validly signed token's session; a token minted by another instance or before a
        restart is adopted (the runtime holds the session). None if the conversation was ended."""
        if sid in self._ended:
            return None
        slot = self._slots.get(sid)
        if slot is None:
            slot = self._slots[sid] = Slot(sid, end, idle_ttl_s, last_seen=self.clock())
        return slot

    def end(self, sid: str) -> Slot | None:
        """Forget the conversation (its tokens stay refused); the ended slot, to hang up its call."""
        slot = self._slots.pop(sid, None)
        if slot is not None:
            self._ended[sid] = slot.end
        return slot

    def is_open(self, slot: Slot) -> bool:
        return self._slots.get(slot.sid) is slot

    def sweep(self) -> tuple[list[Slot], list[Slot]]:
        """Drop conversations past their end (the caller ends them on the runtime) and idle ones (the
        runtime already forgot them); returns (over_time, idle)."""
        now = self.clock()
        over = [s for s in self._slots.values() if now >= s.end]
        idle = [s for s in self._slots.values() if now < s.end and s.idle_expired(now)]
        for slot in over + idle:
            self.end(slot.sid)
        self._ended = {sid: end for sid, end in self._ended.items() if end > now}
        return over, idle
