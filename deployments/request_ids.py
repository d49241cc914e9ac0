"""Request ids a client sends are bounded before anything logs or returns them.

``X-Request-ID`` is kept only if it is a short token (<= 64 of ``[A-Za-z0-9._-]``); anything else is
replaced by a fresh id. Serve's proxy reads the header itself (its access log, and the ``X-Request-ID`` it
returns), so ``deployments.edge.proxy_middlewares`` puts ``RequestIdGuard`` in front of it. Light on
imports: the proxy loads it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

HEADER = b"x-request-id"
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")
Scope = MutableMapping[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]


def request_id_from(value: str | None) -> str:
    """The client's request id if it is a short token, else a fresh one (32 hex digits)."""
    if value and _TOKEN.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdGuard:
    """ASGI middleware: the request's ``X-Request-ID`` header, if any, becomes ``request_id_from`` of it
    (one header; a bad or repeated one is replaced)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = list(scope.get("headers") or ())
            given = [v for k, v in headers if k.lower() == HEADER]
            if given:
                value = given[0].decode("latin-1") if len(given) == 1 else None
                kept = request_id_from(value).encode()
                scope = dict(scope)
                scope["headers"] = [(k, v) for k, v in headers if k.lower() != HEADER] + [(HEADER, kept)]
        await self.app(scope, receive, send)

