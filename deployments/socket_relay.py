"""The ingress's side of a WebSocket call (``GET /v1/rtc/ws``): one WebSocket relayed to the realtime
deployment through handle calls (``ws_open``, ``ws_push``, the streamed ``ws_media``, ``ws_close``).

Up: what the client sends (microphone frames, the data channel's JSON) is pushed in order, one push in
flight at a time; whatever arrives meanwhile goes with the next (a bounded backlog: past it the oldest
microphone frames are dropped, never the JSON). Down: the call's batches, in order. The WebSocket is
accepted first, so a call that cannot start says why in the data channel's ``error`` event and a close
code of 4000 + the HTTP status (4404 ``session_not_found``, 4503 ``too_many_calls``...), its reason the
error code. A call that ends closes with 1000 and the reason it ended (``hangup``, ``idle``...). A client
that goes away ends the call at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from deployments.common import cancel_stream
from deployments.http import to_api_error
from realtime_avatar import logs
from realtime_avatar.logs import event
from realtime_avatar.rtc import wire

log = logging.getLogger("realtime_avatar.api")
MAX_BACKLOG = 50  # messages waiting for a push (1 s of 20 ms microphone frames)
LATE_VIDEO_S = 0.5  # a video frame this far behind the call's clock when its turn to be sent comes is dropped
VIDEO_TAG = bytes([wire.VIDEO])
NORMAL, SERVER_ERROR = 1000, 1011


async def relay(websocket: WebSocket, realtime: Any, retry_after_s: float) -> None:
    rid = websocket.headers.get("x-request-id") or uuid.uuid4().hex[:16]
    logs.request_id.set(rid)
    params = websocket.query_params
    await websocket.accept()
    try:
        opened = await realtime.ws_open.remote(params.get("session_id", ""), params.get("language", "auto"),
                                               request_id=rid)
    except Exception as exc:
        error = to_api_error(exc, retry_after_s)
        await _refuse(websocket, error.status, error.code, error.message)
        return
    call_id = str(opened["call_id"])
    event(log, "ws_call_open", call_id=call_id, session_id=opened.get("session_id"))
    media = realtime.options(stream=True).ws_media.remote(call_id)
    down = asyncio.ensure_future(_downlink(websocket, media))
    up = asyncio.ensure_future(_uplink(websocket, realtime, call_id))
    try:
        done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (down, up):
            task.cancel()
        cancel_stream(media)
    reason = down.result() if down in done and not down.cancelled() and down.exception() is None else None
    if reason is None:  # the client left (or the relay failed): the call ends now, not at its idle limit
        with contextlib.suppress(Exception):
            await realtime.ws_close.remote(call_id, "peer_gone")
        reason = "peer_gone"
    await _close(websocket, NORMAL, reason)
    event(log, "ws_call_closed", call_id=call_id, reason=reason)


async def _downlink(websocket: WebSocket, media: Any) -> str:
    """Send the call's batches; the reason the call ended (its ``call_ended`` event) when they stop.

    A client that reads slower than the call plays (a thin link) gets the video frames that are already
    late dropped, never the audio or the events: its picture thins out instead of its voice falling
    behind, and what waits to be sent stays bounded by what the audio needs."""
    reason = "ended"
    origin: float | None = None  # wall clock of the call's sample 0, from the first media message
    skipped = 0
    async for batch in media:
        for message in batch:
            if isinstance(message, bytes):
                position = int.from_bytes(message[1:9], "little") if len(message) >= 9 else 0
                now = time.monotonic()
                if origin is None:
                    origin = now - position / wire.AUDIO_RATE
                if message[:1] == VIDEO_TAG and now - origin - position / wire.AUDIO_RATE > LATE_VIDEO_S:
                    skipped += 1
                    continue
                await websocket.send_bytes(message)
            else:
                await websocket.send_text(message)
                if '"call_ended"' in message:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        reason = str(json.loads(message)["reason"])
    if skipped:
        event(log, "ws_video_skipped", frames=skipped)
    return reason


async def _uplink(websocket: WebSocket, realtime: Any, call_id: str) -> None:
    """Receive until the client goes; push what came, one push in flight, in order."""
    backlog: list[bytes | str] = []
    news = asyncio.Event()

    async def pusher() -> None:
        while True:
            await news.wait()
            news.clear()
            batch = backlog[:]
            backlog.clear()
            if batch:
                await realtime.ws_push.remote(call_id, batch)

    task = asyncio.ensure_future(pusher())
    try:
        while not task.done():
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            backlog.append(data if data is not None else message.get("text") or "")
            if len(backlog) > MAX_BACKLOG:  # the runtime is behind: the oldest microphone frame goes
                oldest_audio = next((i for i, m in enumerate(backlog) if isinstance(m, bytes)), None)
                if oldest_audio is not None:
                    backlog.pop(oldest_audio)
            news.set()
        task.result()  # the call is gone (CallNotFound): the downlink says why, or the relay ends here
    except WebSocketDisconnect:
        return
    finally:
        task.cancel()


async def _refuse(websocket: WebSocket, status: int, code: str, message: str) -> None:
    event(log, "ws_call_refused", level=logging.WARNING, status=status, code=code)
    with contextlib.suppress(Exception):
        await websocket.send_text(json.dumps({"type": "error", "error": {"code": code, "message": message}}))
    await _close(websocket, 4000 + status if 400 <= status <= 599 else SERVER_ERROR, code)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state == WebSocketState.DISCONNECTED or \
            websocket.client_state == WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(Exception):
        await websocket.close(code=code, reason=reason[:120])
