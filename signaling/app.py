"""The signaling service: the /avatar page, session tokens, the cost guard, wake-up, and the chat proxy.

Routes (all JSON errors are ``{"error": {"code", "message"}}``):

- ``GET /avatar/``: the built page (``web/dist``); ``GET /healthz``.
- ``POST /avatar/api/session``: a conversation and its token (201), or ``waking`` progress (202).
- ``POST /avatar/api/session/refresh``, ``DELETE /avatar/api/session``: renew or end it (Bearer token).
- ``GET /avatar/api/greeting``, ``POST /avatar/api/chat``: the runtime's NDJSON event streams, relayed.
- ``GET /avatar/api/rtc/config``, ``POST /avatar/api/rtc/offer``, ``DELETE /avatar/api/rtc/call/{id}``:
  a voice call's signalling, relayed (the media then flows between the browser and the runtime).
- ``/avatar/api/rtc/ws`` (WebSocket): a whole call, media included, relayed to the runtime's
  ``/v1/rtc/ws`` when WebRTC cannot connect (``socket_call``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from . import logs, turn
from .config import LANGUAGES, Settings
from .limits import RateLimiter, SessionTable, Slot
from .logs import event
from .runtime import Runtime
from .socket_call import relay_call
from .tokens import Claims, TokenError, issue, verify

log = logging.getLogger("signaling")

API = "/avatar/api"
NDJSON = "application/x-ndjson"
ADOPTED_IDLE_TTL_S = 600.0  # a session known only from its token: the runtime's default idle timeout
SWEEP_INTERVAL_S = 5.0
FULL_RETRY_AFTER_S = 30  # too many conversations: when to try again
RUNTIME_RETRY_AFTER_S = 2
# An SDP offer with every ICE candidate (no trickle) is a few KB; more than the chat bodies' limit.
OFFER_MAX_BYTES = 64 * 1024
OFFER_TIMEOUT_S = 30.0  # the runtime builds a peer connection and gathers its candidates before answering
_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# The page loads nothing from elsewhere: the policy says so and makes a stray CDN link fail loudly.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "media-src 'self' blob:; font-src 'self'; connect-src 'self'; object-src 'none'; "
            "base-uri 'self'; frame-ancestors {ancestors}")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after, self.extra = retry_after, extra

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(math.ceil(self.retry_after))} if self.retry_after is not None else {}
        body = {"error": {"code": self.code, "message": self.message}, **self.extra}
        return JSONResponse(body, self.status, headers=headers)


def _json_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(exc.status_code, code, str(exc.detail)).response()
    log.error("internal_error", exc_info=exc)
    return ApiError(500, "internal_error", f"internal error (request {logs.request_id.get()})").response()


class Guard:
    """Outermost ASGI layer: request id, one log line per request, and the origin lock on the API
    (a browser on another site gets a JSON 403, preflight included; CORS headers are for the allowed)."""

    def __init__(self, app: ASGIApp, allowed_origins: tuple[str, ...]) -> None:
        self.app, self.allowed = app, set(allowed_origins)

    def origin_ok(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1")
        if not origin or origin in self.allowed:
            return True
        host = headers.get(b"host", b"").decode("latin-1")
        return urlsplit(origin).netloc == host  # same origin: the page this service serves

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"].startswith(API) and not self.origin_ok(scope):
            await send({"type": "websocket.close", "code": 4403, "reason": "origin_not_allowed"})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        logs.request_id.set(rid)
        logs.session_id.set("-")
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            if scope["path"].startswith(API) and not self.origin_ok(scope):
                await ApiError(403, "origin_not_allowed", "this site may not call the avatar API")\
                    .response()(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if scope["path"] != "/healthz":
                event(log, "request", method=scope["method"], path=scope["path"], status=status,
                      ms=round((time.perf_counter() - started) * 1000, 1))


class WebFiles(StaticFiles):
    """The built page: hashed assets cached for a year, the HTML revalidated, a strict CSP."""

    def __init__(self, directory: str, ancestors: str) -> None:
        super().__init__(directory=directory, html=True, check_dir=False)
        self.csp = PAGE_CSP.format(ancestors=ancestors)
        self.index = f"{directory}/index.html"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await anyio.Path(self.index).exists():  # checked per request: a build can come later
            error = ApiError(503, "web_not_built",
                             "the page is not built: run `npm ci && npm run build` in web/")
            await error.response()(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if path.startswith("assets/"):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        else:
            response.headers["Cache-Control"] = "no-cache"
            response.headers["Content-Security-Policy"] = self.csp
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response


class UpstreamStream:
    """Relays a runtime NDJSON stream chunk by chunk as it arrives (nothing buffered, nothing decoded).
    A visitor who leaves, or presses stop, closes our side: the runtime connection is closed at once,
    which is how the runtime learns to cancel the reply."""

    def __init__(self, upstream: httpx.Response, started: float,
                 on_end: Callable[[dict[str, Any]], None]) -> None:
        self.upstream, self.started, self.on_end = upstream, started, on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = self.started  # when the request reached this service
        stats: dict[str, Any] = {"bytes": 0, "client_left": False, "runtime_cut": False}
        finished = False
        headers = [(b"content-type", NDJSON.encode()), (b"cache-control", b"no-store"),
                   (b"x-accel-buffering", b"no")]  # tells any buffering proxy in front to pass it through

        async def pump() -> None:
            last = b"\n"
            try:
                async for chunk in self.upstream.aiter_raw():
                    if not chunk:
                        continue
                    if stats["bytes"] == 0:
                        stats["first_byte_ms"] = round((time.perf_counter() - started) * 1000, 2)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    stats["bytes"] += len(chunk)
                    last = chunk[-1:]
            except httpx.HTTPError:  # the runtime went away mid-reply: say so in band, as it would
                stats["runtime_cut"] = True
                line = {"type": "error", "error": {"code": "runtime_unavailable",
                                                   "message": "the avatar's runtime stopped answering"}}
                prefix = b"" if last == b"\n" else b"\n"  # never glue the notice to a half line
                body = prefix + json.dumps(line).encode() + b"\n"
                await send({"type": "http.response.body", "body": body, "more_body": True})
            nonlocal finished
            finished = True  # from here on a disconnect is the ordinary end of the exchange
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async with anyio.create_task_group() as group:
                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    stats["client_left"] = not finished
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                await pump()
                group.cancel_scope.cancel()
        except OSError:  # the send itself found the client gone
            stats["client_left"] = True
        finally:
            with anyio.CancelScope(shield=True):
                await self.upstream.aclose()
            stats["ms"] = round((time.perf_counter() - started) * 1000, 1)
            self.on_end(stats)


class Service:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.runtime = Runtime(settings.runtime_url, settings.wake_timeout_s, settings.stream_idle_timeout_s,
                               transport=transport, api_key=settings.runtime_api_key or None)
        self.sessions = SessionTable(settings.max_sessions, max_calls=settings.max_calls)
        self.session_rate = RateLimiter(settings.sessions_per_minute)
        self.message_rate = RateLimiter(settings.messages_per_minute)
        self.offer_rate = RateLimiter(settings.offers_per_minute)
        self._sweeper: asyncio.Task[None] | None = None

    # --- plumbing ---------------------------------------------------------------------------------------

    def client_ip(self, request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        hops = self.settings.trusted_proxies
        if hops:
            header = request.headers.get("x-forwarded-for", "")
            forwarded = [p.strip() for p in header.split(",") if p.strip()]
            if len(forwarded) >= hops:
                return forwarded[-hops]
        return peer

    def client_tag(self, ip: str) -> str:
        """A keyed hash of the IP: lets logs tell clients apart without recording their address."""
        return hashlib.sha256(self.settings.secret_key + ip.encode()).hexdigest()[:10]

    def limit(self, limiter: RateLimiter, ip: str, what: str) -> None:
        wait = limiter.take(ip)
        if wait:
            event(log, "rate_limited", level=logging.WARNING, what=what, client=self.client_tag(ip))
            raise ApiError(429, "rate_limited", f"too many {what} from this address; try again in "
                           f"{math.ceil(wait)} s", retry_after=wait)

    async def read_json(self, request: Request, optional: bool = False,
                        limit: int | None = None) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        length = request.headers.get("content-length")
        if optional and not ctype and length in (None, "0"):
            return {}
        if ctype != "application/json":
            raise ApiError(415, "unsupported_media_type", "send JSON with Content-Type: application/json")
        limit = limit or self.settings.max_body_bytes
        too_large = ApiError(413, "request_too_large", f"the request body is over {limit} bytes")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        try:
            data = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_json", "the request body must be a JSON object")
        return data

    def authorize(self, request: Request) -> tuple[Claims, Slot]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing_token", "send the session token as Authorization: Bearer <token>")
        return self.verify_token(token)

    def verify_token(self, token: str) -> tuple[Claims, Slot]:
        """The conversation a session token names, if it is valid and the conversation still open."""
        if not token.strip():
            raise ApiError(401, "missing_token", "send the session token")
        try:
            claims = verify(self.settings.secret_key, token.strip())
        except TokenError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        logs.session_id.set(claims.sid)
        slot = self.sessions.get(claims.sid, claims.end, ADOPTED_IDLE_TTL_S)
        if slot is None:
            raise ApiError(410, "session_ended", "this conversation has ended; start a new one")
        return claims, slot

    def runtime_unavailable(self, why: str) -> ApiError:
        self.runtime.mark_cold()
        event(log, "runtime_unavailable", level=logging.WARNING, why=why)
        return ApiError(503, "runtime_unavailable", "the avatar is not reachable right now; try again",
                        retry_after=RUNTIME_RETRY_AFTER_S)

    def relay_error(self, response: httpx.Response, body: bytes) -> ApiError:
        """The runtime's own JSON error, status and Retry-After kept; anything else (a front end's HTML
        502, a gateway timeout) becomes our 503 so the page never shows a proxy's error page."""
        try:
            error = json.loads(body)["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            return self.runtime_unavailable(f"status {response.status_code}, not a JSON error")
        retry = response.headers.get("retry-after")
        return ApiError(response.status_code, code, message,
                        retry_after=float(retry) if retry and retry.isdigit() else None)

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None,
                   timeout: float = 15.0) -> httpx.Response:
        try:
            response = await self.runtime.http.request(
                method, path, json=body, timeout=timeout, headers={"X-Request-ID": logs.request_id.get()})
        except httpx.HTTPError as exc:
            raise self.runtime_unavailable(type(exc).__name__) from None
        if response.status_code >= 400:
            raise self.relay_error(response, response.content)
        self.runtime.mark_ready()
        return response

    async def stream(self, slot: Slot, method: str, path: str, started: float,
                     body: dict[str, Any] | None = None) -> UpstreamStream:
        request = self.runtime.http.build_request(method, path, json=body,
                                                  headers={"X-Request-ID": logs.request_id.get()})
        try:
            upstream = await self.runtime.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self.runtime_unavailable(type(exc).__name__) from None
        if upstream.status_code != 200 or not upstream.headers.get("content-type", "").startswith(NDJSON):
            try:
                content = await upstream.aread()
            except httpx.HTTPError:
                content = b""
            finally:
                await upstream.aclose()
            if upstream.status_code in (404, 410):  # the runtime has forgotten it: so do we
                self.sessions.end(slot.sid)
            raise self.relay_error(upstream, content)
        self.runtime.mark_ready()
        headers_ms = round((time.perf_counter() - started) * 1000, 2)
        sid = slot.sid

        def on_end(stats: dict[str, Any]) -> None:
            slot.last_seen = time.time()
            logs.session_id.set(sid)
            event(log, "stream_end", path=path, upstream_headers_ms=headers_ms, **stats)

        return UpstreamStream(upstream, started, on_end)

    # --- routes -----------------------------------------------------------------------------------------

    async def create_session(self, request: Request) -> Response:
        body = await self.read_json(request, optional=True)
        language = body.get("language", "auto")
        if language not in LANGUAGES:
            raise ApiError(400, "unsupported_language",
                           f"language {language!r} is not supported; use one of {', '.join(LANGUAGES)}")
        ip = self.client_ip(request)
        state = await self.runtime.state(caller=ip)
        if state.state == "waking":  # not an error: the page shows the seconds and asks again
            return JSONResponse(state.as_dict(self.settings.wake_timeout_s), 202,
                                headers={"Retry-After": "1"})
        if state.state == "down":
            raise ApiError(503, "runtime_unavailable",
                           f"the avatar did not wake up within {self.settings.wake_timeout_s:g} s; try again",
                           retry_after=5, **state.as_dict(self.settings.wake_timeout_s))
        self.limit(self.session_rate, ip, "new conversations")
        if not self.sessions.reserve():
            event(log, "sessions_full", level=logging.WARNING, open=len(self.sessions))
            raise ApiError(503, "too_many_sessions", "the avatar is talking with too many visitors right "
                           "now; try again in a minute", retry_after=FULL_RETRY_AFTER_S)
        try:
            created = (await self.call("POST", "/v1/chat/sessions", {"language": language})).json()
            sid = str(created["session_id"])
        except BaseException:
            self.sessions.release()
            raise
        end = time.time() + self.settings.max_session_minutes * 60
        self.sessions.commit(sid, end, float(created.get("expires_in_s") or ADOPTED_IDLE_TTL_S))
        token, claims = issue(self.settings.secret_key, sid, self.settings.token_ttl_s, end)
        logs.session_id.set(sid)
        event(log, "session_created", language=created.get("language"), client=self.client_tag(ip),
              open=len(self.sessions))
        return JSONResponse({
            "token": token, "token_expires_in_s": round(claims.exp - claims.iat, 1),
            "session_id": sid, "language": created.get("language", language),
            "greeting": created.get("greeting", ""), "ends_in_s": round(end - claims.iat, 1),
        }, 201, headers={"Cache-Control": "no-store"})

    async def refresh(self, request: Request) -> Response:
        claims, _ = self.authorize(request)
        token, fresh = issue(self.settings.secret_key, claims.sid, self.settings.token_ttl_s, claims.end)
        return JSONResponse({"token": token, "token_expires_in_s": round(fresh.exp - fresh.iat, 1),
                             "ends_in_s": round(claims.end - fresh.iat, 1)},
                            headers={"Cache-Control": "no-store"})

    async def end_session(self, request: Request) -> Response:
        claims, _ = self.authorize(request)
        slot = self.sessions.end(claims.sid)
        if slot is not None:
            await self.hang_up(slot, "session_ended")
        try:
            ended = (await self.call("DELETE", f"/v1/chat/sessions/{claims.sid}")).json()
        except ApiError as exc:
            if exc.status not in (404, 410):  # already gone on the runtime: ended all the same
                raise
            ended = {"session_id": claims.sid, "ended": True}
        event(log, "session_ended", turns=ended.get("turns"), open=len(self.sessions))
        return JSONResponse({"session_id": claims.sid, "ended": True, "turns": ended.get("turns")})

    async def greeting(self, request: Request) -> UpstreamStream:
        started = time.perf_counter()
        _, slot = self.authorize(request)
        self.limit(self.message_rate, self.client_ip(request), "messages")
        return await self.stream(slot, "GET", f"/v1/chat/sessions/{slot.sid}/greeting", started)

    async def chat(self, request: Request) -> UpstreamStream:
        started = time.perf_counter()
        _, slot = self.authorize(request)
        body = await self.read_json(request)
        text, language = body.get("text"), body.get("language", "auto")
        if not isinstance(text, str) or not isinstance(language, str):
            raise ApiError(400, "invalid_request", "send {\"text\": string, \"language\": string}")
        self.limit(self.message_rate, self.client_ip(request), "messages")
        slot.last_seen = time.time()
        # Empty, too long or in an unknown language: the runtime's own checks answer (400/413).
        return await self.stream(slot, "POST", "/v1/chat", started,
                                 {"session_id": slot.sid, "text": text, "language": language})

    # --- voice calls: signalling only; the media flows between the browser and the runtime ---------------

    async def hang_up(self, slot: Slot, why: str) -> None:
        """Ends the conversation's call on the runtime, if it has one. Never raises: a call the runtime
        already dropped (404) is ended all the same, and an unreachable runtime drops its calls anyway."""
        call_id, slot.call_id = slot.call_id, None
        if call_id is None:
            return
        logs.session_id.set(slot.sid)
        event(log, "call_hangup", call_id=call_id, why=why)
        try:
            await self.call("DELETE", f"/v1/rtc/calls/{call_id}", timeout=5.0)
        except ApiError as exc:
            if exc.status not in (404, 410):
                event(log, "call_hangup_failed", level=logging.WARNING, call_id=call_id, code=exc.code)

    async def rtc_config(self, request: Request) -> Response:
        _, slot = self.authorize(request)
        config = (await self.call("GET", f"/v1/rtc/config?session_id={slot.sid}")).json()
        settings = self.settings
        if settings.turn_urls:  # our own relay credential, bound to this conversation, in place of any other
            servers = [s for s in config.get("ice_servers") or [] if not turn.is_relay(s)]
            servers.append(turn.browser_ice_server(settings.turn_urls, settings.turn_secret, slot.sid,
                                                   settings.turn_ttl_s))
            config["ice_servers"] = servers
        if settings.ice_transport_policy:
            config["ice_transport_policy"] = settings.ice_transport_policy
        return JSONResponse(config, headers={"Cache-Control": "no-store"})

    async def rtc_offer(self, request: Request) -> Response:
        _, slot = self.authorize(request)
        body = await self.read_json(request, limit=OFFER_MAX_BYTES)
        sdp, kind, language = body.get("sdp"), body.get("type", "offer"), body.get("language", "auto")
        if not isinstance(sdp, str) or kind != "offer" or not isinstance(language, str):
            raise ApiError(400, "invalid_request",
                           "send {\"sdp\": string, \"type\": \"offer\", \"language\": string}")
        if language not in LANGUAGES:
            raise ApiError(400, "unsupported_language",
                           f"language {language!r} is not supported; use one of {', '.join(LANGUAGES)}")
        self.limit(self.offer_rate, self.client_ip(request), "calls")
        slot.last_seen = time.time()
        async with slot.call_lock:  # one offer at a time per conversation: it holds one call at most
            await self.hang_up(slot, "replaced")  # first, so the old call's capacity is free for the new
            self.reserve_call()
            try:
                response = await self.call("POST", "/v1/rtc/offer", {
                    "session_id": slot.sid, "sdp": sdp, "type": "offer", "language": language,
                }, timeout=OFFER_TIMEOUT_S)
            except ApiError as exc:
                if exc.code in ("session_not_found", "session_expired"):  # the runtime forgot it: so do we
                    self.sessions.end(slot.sid)
                raise
            finally:
                self.sessions.release_call()
            answer = response.json()
            call_id = str(answer.get("call_id", ""))
            slot.call_id = call_id or None
            if call_id:
                self.sessions.call_started(call_id)
            if not self.sessions.is_open(slot):  # the conversation ended while the runtime answered
                await self.hang_up(slot, "session_ended")
                raise ApiError(410, "session_ended", "this conversation has ended; start a new one")
        event(log, "call_started", call_id=call_id, language=answer.get("language"))
        return JSONResponse(answer, response.status_code, headers={"Cache-Control": "no-store"})

    def reserve_call(self) -> None:
        """Count a call about to be asked of the runtime against ``max_calls`` (``release_call`` after),
        or refuse it: 503 ``too_many_calls``, as the runtime's own cap answers."""
        if not self.sessions.reserve_call():
            event(log, "calls_full", level=logging.WARNING, calls=self.sessions.calls)
            raise ApiError(503, "too_many_calls", "the avatar is on too many calls right now; try again in a "
                           "minute", retry_after=FULL_RETRY_AFTER_S)

    async def rtc_hangup(self, request: Request) -> Response:
        _, slot = self.authorize(request)
        call_id = request.path_params["call_id"]
        if not _CALL_ID.match(call_id):
            raise ApiError(404, "call_not_found", "no such call in this conversation")
        async with slot.call_lock:
            if call_id != slot.call_id and not await self.owns_call(slot, call_id):
                raise ApiError(404, "call_not_found", "no such call in this conversation")
            if slot.call_id == call_id:
                slot.call_id = None
            event(log, "call_hangup", call_id=call_id, why="visitor")
            response = await self.call("DELETE", f"/v1/rtc/calls/{call_id}", timeout=5.0)
        return JSONResponse(response.json(), response.status_code)

    async def rtc_socket(self, websocket: WebSocket) -> None:
        """The call over one WebSocket, when WebRTC cannot connect (``socket_call``)."""
        await relay_call(self, websocket)

    async def owns_call(self, slot: Slot, call_id: str) -> bool:
        """A call this instance did not see start (a restart, another instance) is the visitor's to end
        only if the runtime says it belongs to their conversation."""
        try:
            state = (await self.call("GET", f"/v1/rtc/calls/{call_id}", timeout=5.0)).json()
        except ApiError as exc:
            if exc.status in (404, 410):
                return False
            raise
        return isinstance(state, dict) and state.get("session_id") == slot.sid

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def to_page(self, request: Request) -> Response:
        return RedirectResponse("/avatar/", 308)

    # --- lifecycle --------------------------------------------------------------------------------------

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            over, idle = self.sessions.sweep()
            for slot in over:  # out of minutes: end it on the runtime too, so its GPU time stops
                logs.session_id.set(slot.sid)
                event(log, "session_time_limit")
                await self.hang_up(slot, "session_time_limit")
                with contextlib.suppress(ApiError):
                    await self.call("DELETE", f"/v1/chat/sessions/{slot.sid}")
            for slot in idle:
                logs.session_id.set(slot.sid)
                event(log, "session_idle_expired")
            for slot in self.sessions.calls_over(self.settings.max_call_minutes * 60):
                logs.session_id.set(slot.sid)  # the call is out of minutes; the conversation goes on
                event(log, "call_time_limit", call_id=slot.call_id)
                await self.hang_up(slot, "call_time_limit")

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.settings.secret_generated:
            log.warning("SIGNALING_SECRET is not set: tokens are signed with a random per-process key and "
                        "die with this process (set it when running more than one instance)")
        event(log, "signaling_started", runtime=self.settings.runtime_url,
              max_sessions=self.settings.max_sessions, web_dir=str(self.settings.web_dir))
        self._sweeper = asyncio.create_task(self.sweep_forever())
        try:
            yield
        finally:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            await self.runtime.close()


def create_app(settings: Settings | None = None,
               transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """The ASGI app. ``transport`` replaces the HTTP transport to the runtime (tests)."""
    settings = settings or Settings.from_env()
    service = Service(settings, transport)
    ancestors = " ".join(("'self'", *settings.allowed_origins))
    web = GZipMiddleware(WebFiles(str(settings.web_dir), ancestors), minimum_size=500)
    api = [
        Route("/session", service.create_session, methods=["POST"]),
        Route("/session", service.end_session, methods=["DELETE"]),
        Route("/session/refresh", service.refresh, methods=["POST"]),
        Route("/greeting", service.greeting, methods=["GET"]),
        Route("/chat", service.chat, methods=["POST"]),
        Route("/rtc/config", service.rtc_config, methods=["GET"]),
        Route("/rtc/offer", service.rtc_offer, methods=["POST"]),
        Route("/rtc/call/{call_id}", service.rtc_hangup, methods=["DELETE"]),
        WebSocketRoute("/rtc/ws", service.rtc_socket),
    ]
    routes = [
        Route("/healthz", service.healthz, methods=["GET"]),
        Mount(API, routes=api),  # its own router: an unknown API path is a JSON 404/405, never the page
        Route("/avatar", service.to_page, methods=["GET", "HEAD"]),
        Mount("/avatar", app=web),
    ]
    middleware = [
        Middleware(Guard, allowed_origins=settings.allowed_origins),
        Middleware(CORSMiddleware, allow_origins=list(settings.allowed_origins),
                   allow_methods=["GET", "POST", "DELETE"],
                   allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                   expose_headers=["Retry-After", "X-Request-ID"], max_age=600),
    ]
    handlers = {HTTPException: _json_error, ApiError: _json_error, Exception: _json_error}
    app = Starlette(routes=routes, middleware=middleware, lifespan=service.lifespan,
                    exception_handlers=handlers)
    app.state.service = service
    return app
