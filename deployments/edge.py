"""The API's edge, inside Serve's HTTP proxy: what must happen before a request reaches an ingress replica.

Serve's proxy hands a request to an ingress replica as soon as its headers are in, and the replica then
pulls the body through the proxy: a client that sends its body slowly holds one of the ingress's
``max_ongoing_requests`` slots all along, and a few dozen of them stall every route, health checks
included. ``EdgeGuard`` runs in the proxy (``proxy_middlewares``, named in
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` by ``graphs.launch``) and, for each request:

- drops Serve's per-request control headers, so a client can neither lift the request timeout
  (``x-request-timeout-seconds: 0``) nor keep work running after it left (``x-request-disconnect-disabled``);
- checks the optional API key (``serve.api_key``) and the Origin of browser requests;
- reads the body whole, here, before the request goes on: within ``limits.body_timeout_s`` (else 408
  ``body_timeout``), within the size limits (413), at most ``limits.max_uploads_per_client`` bodies at once
  per client address (429 ``too_many_uploads``) and ``limits.max_uploads_in_progress`` in all (503);
- turns the proxy's own plain-text errors (the ingress queue full, Serve's request timeout) into the API's
  JSON errors.

Settings come from the one config system (``avatar.yaml`` + ``AVATAR_*``), read in the proxy's process.
Light on imports: no Ray, no FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from deployments.request_ids import RequestIdGuard, request_id_from
from realtime_avatar.config import Settings, get_settings
from realtime_avatar.logs import event

log = logging.getLogger("realtime_avatar.edge")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes whose body is an upload (limits.max_upload_bytes); every other body is JSON (limits.max_json_bytes).
UPLOAD_PATHS = ("/v1/voices", "/v1/avatars", "/v1/asr")
MULTIPART_SLACK_BYTES = 64_000  # a multipart form's framing on top of the file it carries
MOTION_VIDEO_PATH = "/v1/avatars"  # takes the owner's reference video beside the portrait


def upload_limit(path: str, limits: Any) -> int:
    """The most bytes of files a request to upload route ``path`` may carry (its framing aside)."""
    extra = limits.max_motion_video_bytes if path.rstrip("/") == MOTION_VIDEO_PATH else 0
    return limits.max_upload_bytes + extra
# Probes need no key: they say only whether the service is up (and /readyz which engines it runs).
OPEN_PATHS = ("/healthz", "/readyz", "/-/healthz")
# Serve reads these from the client's request as hints meant for a trusted proxy in front of it.
SERVE_CONTROL_HEADERS = (b"x-request-timeout-seconds", b"x-request-disconnect-disabled",
                         b"serve_multiplexed_model_id", b"serve-multiplexed-model-id")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CORS_HEADERS = "authorization, content-type, x-api-key, x-request-id"
CORS_METHODS = "GET, POST, DELETE, OPTIONS"


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}


def origin_allowed(origin: str, host: str, allowed: list[str]) -> bool:
    """An Origin header is fine if listed (or ``*`` is), or if it is the API's own loopback origin (its
    /docs page): a page elsewhere, or a DNS-rebinding name for 127.0.0.1, is neither."""
    origin = origin.strip().rstrip("/").lower()
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    return parts.hostname in LOOPBACK_HOSTS and parts.netloc == host.strip().lower()


def is_preflight(method: str, headers: dict[str, str]) -> bool:
    """A browser's CORS preflight: it never carries credentials, so it cannot carry the key."""
    return method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers


def access_problem(
    path: str, headers: dict[str, str], settings: Settings, method: str = "GET"
) -> Refusal | None:
    """Why a request may not use the API (no or wrong key, a foreign Origin), or None. ``headers``:
    lower-case names."""
    serve = settings.serve
    origin = headers.get("origin")
    if origin is not None and not origin_allowed(origin, headers.get("host", ""), serve.allowed_origins):
        return Refusal(403, "origin_not_allowed", "requests from this origin are not allowed "
                       "(serve.allowed_origins)")
    if serve.api_key is None or path in OPEN_PATHS or is_preflight(method, headers):
        return None
    # X-API-Key too: a caller behind Cloud Run IAM (the signaling service) sends its ID token as the bearer.
    scheme, _, bearer = headers.get("authorization", "").partition(" ")
    given = [bearer.strip()] if scheme.lower() == "bearer" else []
    given += [headers["x-api-key"].strip()] if "x-api-key" in headers else []
    key = serve.api_key.encode()
    if not any(hmac.compare_digest(g.encode("utf-8", "replace"), key) for g in given):
        return Refusal(401, "unauthorized", "this API needs its key: 'Authorization: Bearer <key>' or "
                       "'X-API-Key: <key>' (serve.api_key)", {"WWW-Authenticate": "Bearer"})
    return None


def json_error(refusal: Refusal, request_id: str) -> list[Message]:
    body = json.dumps({"error": {"code": refusal.code, "message": refusal.message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", request_id.encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in refusal.headers.items()]
    return [{"type": "http.response.start", "status": refusal.status, "headers": headers},
            {"type": "http.response.body", "body": body}]


class EdgeGuard:
    """ASGI middleware for Serve's proxy; see the module docstring. ``settings``: for tests; the proxy
    reads the config system's."""

    def __init__(self, app: App, settings: Settings | None = None) -> None:
        self.app = app
        self.settings = settings or get_settings()  # fails the proxy's start loudly on a bad config
        self.per_client: Counter[str] = Counter()
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # a call over the fallback: the same key and Origin rules
            problem = access_problem(scope["path"], _headers(scope), self.settings)
            if problem is not None:
                event(log, "request_refused", level=logging.WARNING, status=problem.status, code=problem.code,
                      path=scope["path"])
                await send({"type": "websocket.close", "code": 4000 + problem.status, "reason": problem.code})
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = [(k, v) for k, v in scope.get("headers") or () if k.lower() not in SERVE_CONTROL_HEADERS]
        scope = {**scope, "headers": raw}
        headers = _headers(scope)
        request_id = request_id_from(headers.get("x-request-id"))
        if "x-request-id" not in headers:  # Serve's proxy and the ingress use this id too
            scope["headers"] = [*raw, (b"x-request-id", request_id.encode())]
        origin = headers.get("origin")
        try:
            problem = access_problem(scope["path"], headers, self.settings, scope["method"])
            if problem is not None:
                raise problem
            if origin is not None and is_preflight(scope["method"], headers):
                await self._preflight(send, origin, request_id)
                return
            if "content-length" in headers or "transfer-encoding" in headers:
                receive = await self._read_body(scope, receive, headers)
        except Refusal as refusal:
            event(log, "request_refused", level=logging.WARNING, status=refusal.status, code=refusal.code,
                  path=scope["path"])
            for message in json_error(refusal, request_id):
                await send(message)
            return
        if receive is _GONE:
            return  # the client left before its body was in: nobody to answer
        cors = _allow(origin) if origin else []
        plain = _JsonErrors(send, request_id, self.settings.serve.retry_after_s, cors)
        try:
            await self.app(scope, receive, plain)
        finally:
            await plain.finish()

    async def _preflight(self, send: Send, origin: str, request_id: str) -> None:
        headers = [*_allow(origin), (b"access-control-allow-methods", CORS_METHODS.encode()),
                   (b"access-control-allow-headers", CORS_HEADERS.encode()),
                   (b"access-control-max-age", b"600"), (b"x-request-id", request_id.encode())]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _read_body(self, scope: Scope, receive: Receive, headers: dict[str, str]) -> Receive:
        """The whole body, read here within the deadline and limits; the app gets it replayed."""
        limits = self.settings.limits
        upload = scope["path"].rstrip("/") in UPLOAD_PATHS
        files = upload_limit(scope["path"], limits)
        limit = files + MULTIPART_SLACK_BYTES if upload else limits.max_json_bytes
        if upload:
            too_large = Refusal(413, "upload_too_large", f"the upload is larger than {files} bytes")
        else:
            too_large = Refusal(413, "body_too_large", f"the JSON body is larger than {limit} bytes")
        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        client = (scope.get("client") or ("-", 0))[0]
        retry = {"Retry-After": str(max(1, round(self.settings.serve.retry_after_s)))}
        if self.per_client[client] >= limits.max_uploads_per_client:
            raise Refusal(429, "too_many_uploads", f"this client is already sending "
                          f"{limits.max_uploads_per_client} request bodies; finish those first", retry)
        if self.in_progress >= limits.max_uploads_in_progress:
            raise Refusal(503, "overloaded", "the server is receiving too many uploads; retry later", retry)
        self.per_client[client] += 1
        self.in_progress += 1
        try:
            async with asyncio.timeout(limits.body_timeout_s):
                body = await _drain(receive, limit, too_large)
        except TimeoutError:
            raise Refusal(408, "body_timeout", f"the request body did not arrive within "
                          f"{limits.body_timeout_s:g} s") from None
        finally:
            self.in_progress -= 1
            self.per_client[client] -= 1
            if self.per_client[client] <= 0:
                del self.per_client[client]
        if body is None:
            return _GONE
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # a disconnect, later
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay


def _allow(origin: str) -> list[tuple[bytes, bytes]]:
    """CORS headers for an Origin that passed ``origin_allowed``."""
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


async def _drain(receive: Receive, limit: int, too_large: Refusal) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            raise too_large
        if not message.get("more_body", False):
            return bytes(body)


async def _gone() -> Message:
    return {"type": "http.disconnect"}


_GONE: Receive = _gone

# The proxy's own answers (text/plain) and what the API says instead.
_PROXY_ERRORS = {
    503: (503, "overloaded", "the API is at capacity (its queue is full); retry later"),
    408: (504, "request_timeout", "the request took longer than the server's request timeout"),
    404: (404, "not_found", "no such route"),
}


class _JsonErrors:
    """``send`` for the proxy: its plain-text error responses leave as the API's JSON errors (the app's
    own errors are JSON already), and a request it ended without any response gets a JSON 503."""

    def __init__(self, send: Send, request_id: str, retry_after_s: float,
                 extra: list[tuple[bytes, bytes]]) -> None:
        self.send, self.request_id, self.retry_after_s, self.extra = send, request_id, retry_after_s, extra
        self.started = self.replaced = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            found = dict((k.lower(), v) for k, v in message.get("headers") or ())
            is_json = found.get(b"content-type", b"").startswith(b"application/json")
            if message["status"] >= 400 and not is_json:
                self.replaced = True
                status, code, text = _PROXY_ERRORS.get(
                    message["status"], (503, "stage_unavailable", "the server could not answer; retry later"))
                retry = found.get(b"retry-after", str(max(1, round(self.retry_after_s))).encode())
                extra = {"Retry-After": retry.decode()} if status == 503 else {}
                for reply in json_error(Refusal(status, code, text, extra), self.request_id):
                    if reply["type"] == "http.response.start":
                        reply["headers"] += self.extra
                    await self.send(reply)
                return
            message = {**message, "headers": [*(message.get("headers") or ()), *self.extra]}
        elif message["type"] == "http.response.body" and self.replaced:
            return  # the plain-text body of a replaced response
        await self.send(message)

    async def finish(self) -> None:
        if not self.started:  # e.g. the replica died: Serve's proxy sends nothing, uvicorn would say 500
            self.started = True
            retry = {"Retry-After": str(max(1, round(self.retry_after_s)))}
            refusal = Refusal(503, "stage_unavailable", "the server could not answer; retry later", retry)
            with contextlib.suppress(Exception):  # a client that is gone: nothing to tell
                for reply in json_error(refusal, self.request_id):
                    await self.send(reply)


def proxy_middlewares() -> list[Any]:
    """For Serve's proxy (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``): the edge guard, and the request
    id check outermost (the edge's own refusals carry the bounded id)."""
    from starlette.middleware import Middleware

    return [Middleware(EdgeGuard), Middleware(RequestIdGuard)]
