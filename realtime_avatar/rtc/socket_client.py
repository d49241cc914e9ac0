"""A headless caller over the WebSocket fallback (``GET /v1/rtc/ws``), recording what it receives the way
``RealtimeCall`` does, so the harness and ``measure`` read both transports alike.

The microphone is the same ``ScriptedMicrophone`` (clock-paced 20 ms frames at 48 kHz), sent as
``wire`` microphone frames; events are the data channel's JSON as text messages. Received audio and
video carry their position on the call's clock (48 kHz samples): ``pts`` is that position (the video's
``time_base`` is 1/48000) and ``arrived_at`` is when the message was read off the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed

from realtime_avatar.rtc import protocol, wire
from realtime_avatar.rtc.client import (
    MIC_RATE,
    HttpSignalling,
    RealtimeApiError,
    Recording,
    ScriptedMicrophone,
    clock,
)
from realtime_avatar.rtc.measure import SentUtterance, TimedEvent
from realtime_avatar.rtc.media import AUDIO_RATE

log = logging.getLogger("realtime_avatar.rtc.client")
CLOSE_ERROR_BASE = 4000  # the runtime refuses a call with 4000 + the HTTP status of the error


def ws_url(base_url: str, path: str = "/v1/rtc/ws", **query: str) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, urlencode(query), ""))


class SocketCall:
    """One call over the fallback: ``async with SocketCall(url, "en") as call: await call.say(...)``.

    The same surface as ``RealtimeCall`` (``recording``, ``say``, ``send``, ``wait_event``, ``close``).
    ``start`` raises ``RealtimeApiError`` (status, code) when the runtime refuses the call.
    """

    transport = "websocket"

    def __init__(self, base_url: str, language: str = "auto", *, noise_dbfs: float | None = -70.0,
                 keep_video: bool = True, connect_timeout_s: float = 30.0,
                 session: dict[str, Any] | None = None, session_id: str | None = None,
                 token: str | None = None) -> None:
        self.base_url, self.language = base_url, language
        # With a token, ``base_url`` is the signaling service: its /avatar/api/rtc/ws, token first.
        self.token = token
        self.session_fields = session or {}
        self.session_id = session_id  # given: skip creating one (tests of refused calls)
        self.keep_video, self.connect_timeout_s = keep_video, connect_timeout_s
        self.mic = ScriptedMicrophone(noise_dbfs=noise_dbfs)
        self.recording = Recording(language=language)
        self.recording.video.time_base = 1 / AUDIO_RATE
        self.socket: Any = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._news = asyncio.Event()
        self._closed = False

    async def __aenter__(self) -> SocketCall:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        rec = self.recording
        rec.started_at = clock()
        if self.session_id is None and self.token is None:
            http = HttpSignalling(self.base_url)
            try:
                session = await http.create_session(self.language, **self.session_fields)
                self.session_id = str(session["session_id"])
            finally:
                await http.aclose()
        rec.session_id = self.session_id or ""
        if self.token is None:
            url = ws_url(self.base_url, session_id=rec.session_id, language=self.language)
        else:
            url = ws_url(self.base_url, "/avatar/api/rtc/ws")
        connecting = websockets.connect(url, max_size=1 << 22)
        self.socket = await asyncio.wait_for(connecting, self.connect_timeout_s)
        if self.token is not None:
            await self.socket.send(protocol.encode("start", token=self.token, language=self.language))
        first = await asyncio.wait_for(self._read_one(), self.connect_timeout_s)
        if first is None or first.type != protocol.CALL_STARTED:
            error = (first.event.get("error") if first is not None else None) or {}
            await self._wait_closed()
            status = (self.close_code or 0) - CLOSE_ERROR_BASE
            raise RealtimeApiError(status, str(error.get("code") or self.close_reason or "closed"),
                                   str(error.get("message") or "the call did not start"))
        rec.connected_at = clock()
        rec.call_id = str(first.event.get("call_id", ""))
        rec.session_id = str(first.event.get("session_id", rec.session_id))
        rec.answer = {k: v for k, v in first.event.items() if k != "type"}
        self._tasks = [asyncio.ensure_future(self._receive()), asyncio.ensure_future(self._speak())]

    async def _read_one(self) -> TimedEvent | None:
        """Messages until the first event (media before it is recorded too); None if the socket closed."""
        try:
            while True:
                found = self._take(await self.socket.recv())
                if found is not None:
                    return found
        except ConnectionClosed:
            return None

    async def _wait_closed(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.socket.wait_closed(), 5)
        self.close_code, self.close_reason = self.socket.close_code, self.socket.close_reason or ""

    def _take(self, message: str | bytes) -> TimedEvent | None:
        now = clock()
        if isinstance(message, str):
            data = protocol.decode(message, max_chars=1 << 20)
            if data is None:
                log.warning("unreadable event: %r", message[:200])
                return None
            event = TimedEvent(now, data)
            self.recording.events.append(event)
            self._news.set()
            return event
        kind, position, payload = wire.parse_media(message)
        if kind == wire.AUDIO:
            audio = self.recording.audio
            audio.sample_rate = AUDIO_RATE
            audio.chunks.append(np.frombuffer(payload, "<i2").astype(np.float32) / 32768.0)
            audio.pts.append(position)
            audio.received_at.append(now)
            audio.arrived_at.append(now)
        else:
            video = self.recording.video
            video.frames.append(wire.decode_jpeg(payload) if self.keep_video else np.zeros(0))
            video.pts.append(position)
            video.received_at.append(now)
            video.arrived_at.append(now)
        return None

    async def _receive(self) -> None:
        try:
            async for message in self.socket:
                self._take(message)
        except ConnectionClosed:
            pass
        finally:
            self.close_code, self.close_reason = self.socket.close_code, self.socket.close_reason or ""
            self._news.set()

    async def _speak(self) -> None:
        with contextlib.suppress(ConnectionClosed, Exception):
            while True:
                frame = await self.mic.recv()
                samples = frame.to_ndarray().reshape(-1)
                await self.socket.send(wire.mic_frame(samples, MIC_RATE))

    @property
    def ended(self) -> bool:
        return self.close_code is not None

    # -- the script (RealtimeCall's) ------------------------------------------------------------------

    async def say(self, pcm: np.ndarray, sample_rate: int, **meta: Any) -> SentUtterance:
        sent = await self.mic.say(pcm, sample_rate, **meta)
        self.recording.utterances.append(sent)
        return sent

    def send(self, kind: str, **fields: Any) -> None:
        if self.socket is not None and self.close_code is None:
            task = asyncio.ensure_future(self._send_text(protocol.encode(kind, **fields)))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send_text(self, text: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.socket.send(text)

    async def wait_event(self, kind: str | tuple[str, ...], *, after: float = 0.0, timeout_s: float = 30.0,
                         where: Callable[[dict[str, Any]], bool] | None = None) -> TimedEvent | None:
        kinds = (kind,) if isinstance(kind, str) else kind
        deadline = clock() + timeout_s
        seen = 0
        while True:
            events = self.recording.events
            for e in events[seen:]:
                if e.type in kinds and e.at >= after and (where is None or where(e.event)):
                    return e
            seen = len(events)
            left = deadline - clock()
            if left <= 0:
                return None
            self._news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), left)

    async def vanish(self) -> None:
        """Go away without a hang-up or a close handshake: the TCP connection just drops."""
        self._closed = True
        self.mic.stop()
        for task in self._tasks:
            task.cancel()
        transport = getattr(self.socket, "transport", None)
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.recording.ended_at = clock()
        if self.socket is not None and self.close_code is None:
            await self._send_text(protocol.encode(protocol.HANGUP))
            with contextlib.suppress(Exception):
                if self._tasks:  # until the runtime closes (after its call_ended)
                    await asyncio.wait_for(asyncio.shield(self._tasks[0]), 5)
        self.mic.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close()
