"""What every stage deployment shares: settings from the driver, request-tagged logs, health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from engines.errors import InputError
from realtime_avatar import logs
from realtime_avatar.config import Settings, StageServing
from realtime_avatar.logs import event
from realtime_avatar.store import StoreUnavailableError

T = TypeVar("T")
_DONE = object()
log = logging.getLogger("realtime_avatar.stages")


class StageTimeoutError(RuntimeError):
    """A call into a stage ran past its ``call_timeout_s``: the work stops, the request ends with 504."""

    code = "stage_timeout"
    status = 504


class StageBusyError(RuntimeError):
    """Admission by cost: this replica's work in flight would exceed its ``max_cost`` (503 overloaded)."""

    code = "overloaded"
    status = 503


# Failures that say nothing about this replica's own health: bad input, a shared store (GCS) that is
# down, which a restart would not mend, and one request's own deadline or cost (the API answers those
# 4xx / 503 / 504 instead).
NOT_OUR_FAULT = (InputError, StoreUnavailableError, StageTimeoutError, StageBusyError)


def settings_from(config: dict[str, Any]) -> Settings:
    """Rebuild the driver's resolved settings in a replica (constructor values beat the environment)."""
    logs.configure(config.get("log_level", "INFO"))
    return Settings(**{k: v for k, v in config.items() if k != "log_level"})


class StageHealth:
    """Serve restarts a replica whose ``check_health`` raises: after a run of internal failures the stage
    is presumed broken (a wedged GPU, a corrupted model) and reports unhealthy.

    It also counts the requests in flight (``/readyz`` shows them), which is how tests see that a
    cancelled stream really freed the stage, and applies the stage's compute caps: a deadline per call
    (``call_timeout_s``: blocking steps are waited on no longer, iterators are closed after the step in
    hand) and admission by cost (``max_cost``).
    """

    def __init__(self, unhealthy_after: int, limits: StageServing | None = None) -> None:
        self.unhealthy_after = unhealthy_after
        self.failures_in_a_row = 0
        self.in_flight = 0
        self.timeout_s = limits.call_timeout_s if limits is not None else None
        self.max_cost = limits.max_cost if limits is not None else None
        self.cost_in_flight = 0.0
        self.pool = ThreadPoolExecutor(thread_name_prefix="stage")

    def deadline(self) -> float | None:
        """When a call starting now must be over (event-loop time), or None without a timeout."""
        return None if self.timeout_s is None else asyncio.get_running_loop().time() + self.timeout_s

    @contextlib.contextmanager
    def admit(self, cost: float) -> Iterator[None]:
        """Take a request of ``cost`` (1.0 = one at the stage's input limit) while the cost in flight stays
        within ``max_cost``; an idle replica takes any request, so the largest allowed one still runs."""
        busy = self.cost_in_flight > 0 and self.cost_in_flight + cost > (self.max_cost or float("inf"))
        if busy:
            raise StageBusyError(f"this stage is busy with long requests (cost {self.cost_in_flight:.2f} of "
                                 f"{self.max_cost:g} in flight); retry later")
        self.cost_in_flight += cost
        try:
            yield
        finally:
            self.cost_in_flight -= cost

    async def _wait(self, step: Future[T], deadline: float | None) -> T:
        if deadline is None:
            return await asyncio.wrap_future(step)
        left = deadline - asyncio.get_running_loop().time()
        try:
            # shield: a timeout gives up waiting; the worker thread finishes its step (it cannot be stopped).
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(step)), max(left, 0.0))
        except TimeoutError:
            raise self._timed_out() from None

    def _timed_out(self) -> StageTimeoutError:
        return StageTimeoutError(f"the request ran past this stage's {self.timeout_s:g} s limit")

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def _record(self, exc: BaseException | None) -> None:
        if exc is None:
            self.failures_in_a_row = 0
        elif not isinstance(exc, NOT_OUR_FAULT):
            self.failures_in_a_row += 1

    async def call(
        self, request_id: str, fn: Callable[..., T], *args: Any, deadline: float | None = None
    ) -> T:
        logs.request_id.set(request_id)
        with self.busy():
            try:
                result = await self._wait(self.pool.submit(fn, *args), deadline)
            except Exception as exc:
                self._record(exc)
                raise
        self._record(None)
        return result

    async def iterate(
        self, request_id: str, items: Iterator[T], deadline: float | None = None
    ) -> AsyncIterator[T]:
        """Drain a blocking iterator off the event loop, so health checks and other calls still run.

        When the consumer goes away (cancellation, a new turn) or ``deadline`` passes, the iterator is
        closed at once if idle, or right after the step it is in finishes: never while another thread is
        inside it.
        """
        logs.request_id.set(request_id)
        step: Future[Any] | None = None
        with self.busy():
            try:
                while True:
                    step = self.pool.submit(next, items, _DONE)
                    try:
                        item = await self._wait(step, deadline)
                    except Exception as exc:
                        self._record(exc)
                        raise
                    step = None
                    self._record(None)
                    if item is _DONE:
                        return
                    yield item
            finally:
                _close_when_idle(items, step)

    async def within(self, deadline: float | None, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """``items`` (another stage's stream) while ``deadline`` holds: waiting on it counts too."""
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    item = await anext(items)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise self._timed_out() from None
            yield item

    def check(self) -> None:
        if self.failures_in_a_row >= self.unhealthy_after:
            raise RuntimeError(f"{self.failures_in_a_row} internal failures in a row")


def _purge(purge: Callable[[], int]) -> None:
    try:
        gone = purge()
    except Exception as exc:  # a store outage must not fail the health check; the next sweep retries
        event(log, "purge_failed", level=logging.WARNING, error=type(exc).__name__)
        return
    if gone:
        event(log, "expired_purged", count=gone)


def cancel_stream(stream: Any) -> None:
    """Cancel a handle's response stream (its replica stops the work) without raising: a stream that was
    refused (backpressure) or failed raises its error again on ``cancel``, which would replace the error
    already on its way to the client."""
    if stream is not None:
        with contextlib.suppress(Exception):
            stream.cancel()


def _close_when_idle(items: Iterator[Any], step: Future[Any] | None) -> None:
    close = getattr(items, "close", None)
    if close is None:
        return
    if step is None or step.done():
        close()
    else:  # the worker thread is inside next(): close right after it returns, in that thread
        step.add_done_callback(lambda _: _quiet(close))


def _quiet(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):
        fn()


class StageDeployment:
    """Base of the stage deployments: the driver's settings, the stage built and loaded at start, and
    the health rule that Serve polls through ``check_health``.

    ``needs`` names the other stages whose handles the constructor takes (after ``config``), in order;
    the app builder binds them from ``Settings.stages``.
    """

    needs: ClassVar[tuple[str, ...]] = ()
    stage_name: ClassVar[str] = ""  # its entry in serve.deployments (compute caps)

    def _start(self, config: dict[str, Any], build_stage: Callable[[Settings], Any]) -> None:
        self.settings = settings_from(config)
        self.stage = build_stage(self.settings)
        self.stage.load()
        self.health = StageHealth(self.settings.serve.unhealthy_after_failures,
                                  self.settings.serve.deployments.get(self.stage_name))
        self._purged_at = -float("inf")
        self._purging: Future[Any] | None = None

    def check_health(self) -> None:
        self.health.check()
        self._purge_when_due()

    def _purge_when_due(self) -> None:
        """Serve polls ``check_health`` every few seconds: a stage that stores uploads (``purge``) sweeps
        out the expired ones every ``store.purge_interval_s``, off the event loop."""
        purge = getattr(self.stage, "purge", None)
        now = time.monotonic()
        busy = self._purging is not None and not self._purging.done()
        if purge is None or busy or now - self._purged_at < self.settings.store.purge_interval_s:
            return
        self._purged_at = now
        self._purging = self.health.pool.submit(_purge, purge)

    def status(self, **details: Any) -> dict[str, Any]:
        """What ``ready`` answers: the stage's own details and its requests in flight."""
        return {**details, "in_flight": self.health.in_flight}
