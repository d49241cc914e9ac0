"""What every stage deployment shares: settings from the driver, request-tagged logs, health."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from engines.errors import InputError
from realtime_avatar import logs
from realtime_avatar.config import Settings

T = TypeVar("T")


def settings_from(config: dict[str, Any]) -> Settings:
    """Rebuild the driver's resolved settings in a replica (constructor values beat the environment)."""
    logs.configure(config.get("log_level", "INFO"))
    return Settings(**{k: v for k, v in config.items() if k != "log_level"})


class StageHealth:
    """Serve restarts a replica whose ``check_health`` raises: after a run of internal (non-input)
    failures the stage is presumed broken (a wedged GPU, a corrupted model) and reports unhealthy."""

    def __init__(self, unhealthy_after: int) -> None:
        self.unhealthy_after = unhealthy_after
        self.failures_in_a_row = 0

    async def call(self, request_id: str, fn: Callable[..., T], *args: Any) -> T:
        logs.request_id.set(request_id)
        try:
            result = await asyncio.to_thread(fn, *args)
        except InputError:
            raise
        except Exception:
            self.failures_in_a_row += 1
            raise
        self.failures_in_a_row = 0
        return result

    async def iterate(self, request_id: str, items: Iterator[T]) -> AsyncIterator[T]:
        """Drain a blocking iterator off the event loop, so health checks and other calls still run."""
        logs.request_id.set(request_id)
        done = object()
        while True:
            item = await self.call(request_id, functools.partial(next, items, done))
            if item is done:
                return
            yield item  # type: ignore[misc]

    def check(self) -> None:
        if self.failures_in_a_row >= self.unhealthy_after:
            raise RuntimeError(f"{self.failures_in_a_row} internal failures in a row")


class StageDeployment:
    """Base of the stage deployments: the driver's settings, the stage built and loaded at start, and
    the health rule that Serve polls through ``check_health``."""

    def _start(self, config: dict[str, Any], build_stage: Callable[[Settings], Any]) -> None:
        self.settings = settings_from(config)
        self.stage = build_stage(self.settings)
        self.stage.load()
        self.health = StageHealth(self.settings.serve.unhealthy_after_failures)

    def check_health(self) -> None:
        self.health.check()
