"""What every stage deployment shares: settings from the driver, request-tagged logs, health."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from engines.errors import InputError
from realtime_avatar import logs
from realtime_avatar.config import Settings
from realtime_avatar.store import StoreUnavailableError

T = TypeVar("T")
_DONE = object()
# Failures that say nothing about this replica's own health: bad input, and a shared store (GCS) that is
# down, which a restart would not mend (the API answers those 4xx / 503 instead).
NOT_OUR_FAULT = (InputError, StoreUnavailableError)


def settings_from(config: dict[str, Any]) -> Settings:
    """Rebuild the driver's resolved settings in a replica (constructor values beat the environment)."""
    logs.configure(config.get("log_level", "INFO"))
    return Settings(**{k: v for k, v in config.items() if k != "log_level"})


class StageHealth:
    """Serve restarts a replica whose ``check_health`` raises: after a run of internal failures the stage
    is presumed broken (a wedged GPU, a corrupted model) and reports unhealthy.

    It also counts the requests in flight (``/readyz`` shows them), which is how tests see that a
    cancelled stream really freed the stage.
    """

    def __init__(self, unhealthy_after: int) -> None:
        self.unhealthy_after = unhealthy_after
        self.failures_in_a_row = 0
        self.in_flight = 0
        self._pool = ThreadPoolExecutor(thread_name_prefix="stage")

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

    async def call(self, request_id: str, fn: Callable[..., T], *args: Any) -> T:
        logs.request_id.set(request_id)
        with self.busy():
            try:
                result = await asyncio.wrap_future(self._pool.submit(fn, *args))
            except Exception as exc:
                self._record(exc)
                raise
        self._record(None)
        return result

    async def iterate(self, request_id: str, items: Iterator[T]) -> AsyncIterator[T]:
        """Drain a blocking iterator off the event loop, so health checks and other calls still run.

        When the consumer goes away (cancellation, a new turn), the iterator is closed at once if idle,
        or right after the step it is in finishes: never while another thread is inside it.
        """
        logs.request_id.set(request_id)
        step: Future[Any] | None = None
        with self.busy():
            try:
                while True:
                    step = self._pool.submit(next, items, _DONE)
                    try:
                        item = await asyncio.wrap_future(step)
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

    def check(self) -> None:
        if self.failures_in_a_row >= self.unhealthy_after:
            raise RuntimeError(f"{self.failures_in_a_row} internal failures in a row")


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

    def _start(self, config: dict[str, Any], build_stage: Callable[[Settings], Any]) -> None:
        self.settings = settings_from(config)
        self.stage = build_stage(self.settings)
        self.stage.load()
        self.health = StageHealth(self.settings.serve.unhealthy_after_failures)

    def check_health(self) -> None:
        self.health.check()

    def status(self, **details: Any) -> dict[str, Any]:
        """What ``ready`` answers: the stage's own details and its requests in flight."""
        return {**details, "in_flight": self.health.in_flight}
