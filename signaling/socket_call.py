"""The WebSocket fallback through this service: ``/avatar/api/rtc/ws``, relayed to the runtime's WebSocket.

A browser cannot set headers on a WebSocket, so the conversation's token comes in the first message,
``{"type": "start", "token", "language"?}`` (never in the URL, which logs keep). Then the same checks as
``/rtc/offer``: the token, the language, the per-address call rate, and one call per conversation (a new
call, of either transport, replaces the old). Past that, every message is passed on both ways unchanged
(the framing is the runtime's: JSON events as text, media as binary). A refusal, here or by the
runtime, is the data channel's ``error`` event followed by a close code of 4000 + the HTTP status,
its reason the error code; when either side goes, the other is closed with its code and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.exceptions import ConnectionClosed

from . import logs
from .config import LANGUAGES
from .logs import event

if TYPE_CHECKING:
    from .app import ApiError, Service

log = logging.getLogger("signaling")
START_TIMEOUT_S = 10.0  # the page's first message (its token) within this
CONNECT_TIMEOUT_S = 30.0  # the runtime's answer to the upgrade and its first event (call_started)
MAX_MESSAGE_BYTES = 1 << 20  # a 100 ms microphone frame is 9.6 kB; a video frame is tens of kB


def runtime_ws_url(base_url: str, **query: str) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/v1/rtc/ws", urlencode(query), ""))


async def relay_call(service: Service, websocket: WebSocket) -> None:
    from .app import ApiError

    await websocket.accept()
    try:
        slot, language = await _admit(service, websocket)
    except ApiError as exc:
        await refuse(websocket, exc)
        return
    except (WebSocketDisconnect, TimeoutError):
        await _close(websocket, 1000, "no start message")
        return
    slot.last_seen = time.time()
    async with slot.call_lock:  # as /rtc/offer: one call per conversation, within this instance's cap
        await service.hang_up(slot, "replaced")
        try:
            service.reserve_call()
            try:
                upstream, started = await _connect(service, slot.sid, language)
            finally:
                service.sessions.release_call()
        except ApiError as exc:
            if exc.code in ("session_not_found", "session_expired"):
                service.sessions.end(slot.sid)
            await refuse(websocket, exc)
            return
        call_id = str(json.loads(started).get("call_id", ""))
        slot.call_id = call_id or None
        if call_id:
            service.sessions.call_started(call_id)
        if not service.sessions.is_open(slot):  # the conversation ended while the runtime answered
            await upstream.close()
            await service.hang_up(slot, "session_ended")
            await refuse(websocket, ApiError(410, "session_ended",
                                             "this conversation has ended; start a new one"))
            return
    event(log, "call_started", call_id=call_id, transport="websocket", language=language)
    try:
        await websocket.send_text(started)
        code, reason = await _pipe(websocket, upstream)
    finally:
        with contextlib.suppress(Exception):
            await upstream.close()
        if slot.call_id == call_id:
            slot.call_id = None
    await _close(websocket, code, reason)
    event(log, "call_ended", call_id=call_id, transport="websocket", reason=reason)


async def _admit(service: Service, websocket: WebSocket) -> tuple[Any, str]:
    from .app import ApiError

    message = await asyncio.wait_for(websocket.receive_text(), START_TIMEOUT_S)
    try:
        start = json.loads(message)
    except ValueError:
        start = None
    if not isinstance(start, dict) or start.get("type") != "start" or not isinstance(start.get("token"), str):
        raise ApiError(400, "invalid_request", 'send {"type": "start", "token": string, "language"?: string} '
                       "first")
    _, slot = service.verify_token(start["token"])
    language = start.get("language", "auto")
    if not isinstance(language, str) or language not in LANGUAGES:
        raise ApiError(400, "unsupported_language",
                       f"language {str(language)[:20]!r} is not supported; use one of {', '.join(LANGUAGES)}")
    service.limit(service.offer_rate, service.client_ip(websocket), "calls")
    return slot, language


async def _connect(service: Service, session_id: str, language: str) -> tuple[Any, str]:
    """The runtime's WebSocket for this call and its first event (call_started); ApiError if refused."""
    from .app import ApiError

    runtime = service.runtime
    headers = {"X-Request-ID": logs.request_id.get()}
    headers.update({k: v for k, v in runtime.http.headers.items() if k.lower() == "x-api-key"})
    if runtime.auth is not None:
        headers["Authorization"] = f"Bearer {await runtime.auth.token()}"
    url = runtime_ws_url(runtime.base_url, session_id=session_id, language=language)
    try:
        connecting = websockets.connect(url, additional_headers=headers, max_size=MAX_MESSAGE_BYTES)
        upstream = await asyncio.wait_for(connecting, CONNECT_TIMEOUT_S)
        first = await asyncio.wait_for(upstream.recv(), CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
        raise service.runtime_unavailable(type(exc).__name__) from None
    except ConnectionClosed as exc:
        raise service.runtime_unavailable(f"closed {exc.code}") from None
    data = json.loads(first) if isinstance(first, str) else {}
    if data.get("type") == "call_started":
        service.runtime.mark_ready()
        return upstream, first
    error = data.get("error") if isinstance(data.get("error"), dict) else {}
    with contextlib.suppress(Exception):
        await asyncio.wait_for(upstream.wait_closed(), 5)
    status = (upstream.close_code or 0) - 4000
    if not error or not 400 <= status <= 599:
        raise service.runtime_unavailable("the call did not start")
    raise ApiError(status, str(error.get("code")), str(error.get("message")))


async def _pipe(websocket: WebSocket, upstream: Any) -> tuple[int, str]:
    """Both ways until one side goes; the close code and reason to give the page."""

    async def down() -> tuple[int, str]:
        try:
            async for message in upstream:
                if isinstance(message, bytes):
                    await websocket.send_bytes(message)
                else:
                    await websocket.send_text(message)
        except ConnectionClosed:
            pass
        return upstream.close_code or 1000, upstream.close_reason or "ended"

    async def up() -> tuple[int, str]:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return 1000, "client_gone"
            data = message.get("bytes")
            payload = data if data is not None else message.get("text")
            if payload is None or len(payload) > MAX_MESSAGE_BYTES:
                continue
            try:
                await upstream.send(payload)
            except ConnectionClosed:
                return upstream.close_code or 1000, upstream.close_reason or "ended"

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    finished = next(iter(done))
    try:
        return finished.result()
    except Exception:  # the page's socket failed under us: nobody to tell
        return 1000, "client_gone"


async def refuse(websocket: WebSocket, exc: ApiError) -> None:
    event(log, "call_refused", level=logging.WARNING, status=exc.status, code=exc.code, transport="websocket")
    with contextlib.suppress(Exception):
        await websocket.send_text(json.dumps({"type": "error", "error": {"code": exc.code,
                                                                         "message": exc.message}}))
    await _close(websocket, 4000 + exc.status, exc.code)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.client_state == WebSocketState.DISCONNECTED or \
            websocket.application_state == WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(Exception):
        await websocket.close(code=code, reason=reason[:120])
