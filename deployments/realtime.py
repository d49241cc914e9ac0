"""Realtime deployment: owns the calls' WebRTC peer connections and drives the stages for each call.

One replica (a call lives where its offer was answered). Media never passes through Serve: aiortc sends
and receives RTP from this process, while the turn-taking in ``realtime_avatar.rtc.call`` reaches ASR, the
conversation (LLM, history) and the avatar stage (TTS + frames on the idle loop) through handles. A call
ends when the peer hangs up or vanishes, at its time or idle limit, or on DELETE; everything it ran is
cancelled and its slot freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import numpy as np
import psutil
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.common import cancel_stream, settings_from
from engines.errors import InputError
from engines.tts.text import normalize_language
from realtime_avatar import logs
from realtime_avatar.conversation import CapacityError
from realtime_avatar.logs import event
from realtime_avatar.rtc import peer, turn
from realtime_avatar.rtc.call import Call, drain, trim_heap
from realtime_avatar.rtc.media import MediaClock, make_tracks
from realtime_avatar.rtc.protocol import CALL_STARTED, ERROR, EVENTS_CHANNEL, HANGUP, decode
from realtime_avatar.rtc.socket_link import Message, SocketLink
from realtime_avatar.rtc.wire import FrameError
from realtime_avatar.stages import voice_activity

log = logging.getLogger("realtime_avatar.rtc")
SWEEP_S = 0.5


class CallNotFoundError(InputError):
    code = "call_not_found"
    status = 404


class TooManyCallsError(CapacityError):
    code = "too_many_calls"


class _Stages:
    """The handles a call needs, as the plain async calls ``Call`` expects."""

    def __init__(self, asr: DeploymentHandle, conversation: DeploymentHandle, avatar: DeploymentHandle,
                 session_id: str, voice_id: str | None, avatar_id: str | None, request_id: str) -> None:
        self.asr, self.session_id, self.request_id = asr, session_id, request_id
        self.conversation = conversation.options(stream=True)
        self.avatar = avatar.options(stream=True)
        self.voice_id, self.avatar_id = voice_id, avatar_id

    async def transcribe(self, wav: bytes, language: str | None) -> dict[str, Any]:
        return await self.asr.transcribe.remote(wav, language, request_id=self.request_id, fast=True)

    async def talk(self, text: str, language: str) -> AsyncIterator[dict[str, Any]]:
        stream = self.conversation.talk.remote(self.session_id, text, language, request_id=self.request_id)
        try:
            async for item in stream:
                yield item
        finally:
            cancel_stream(stream)

    async def speak(self, text: str, language: str, start_frame: int) -> AsyncIterator[Any]:
        stream = self.avatar.speak.remote(text, language, self.voice_id, self.avatar_id, start_frame,
                                          request_id=self.request_id)
        try:
            async for part in stream:
                yield part
        finally:
            cancel_stream(stream)


class _Live:
    """A call and what it runs besides the call logic: its peer connection and the mic reader (WebRTC),
    or its WebSocket link (the fallback)."""

    def __init__(self, call: Call, pc: Any, link: SocketLink | None = None) -> None:
        self.call, self.pc, self.link = call, pc, link
        self.reader: asyncio.Task[None] | None = None
        self.drains: list[asyncio.Future[None]] = []  # tracks the call does not use, read and dropped
        self.ending: asyncio.Future[None] | None = None
        self.closing = False
        self.video: Any = None  # the avatar's video track (WebRTC): its frames sent cached / encoded live


@serve.deployment(name="Realtime")
class RealtimeDeployment:
    needs: ClassVar[tuple[str, ...]] = ("asr", "avatar")

    def __init__(self, config: dict[str, Any], asr: DeploymentHandle, avatar: DeploymentHandle,
                 conversation: DeploymentHandle) -> None:
        self.settings = settings_from(config)
        self.rt = self.settings.realtime
        self.asr, self.avatar, self.conversation = asr, avatar, conversation
        self.calls: dict[str, _Live] = {}
        self._reserved = 0  # offers being answered count against the cap too
        self._idle: dict[str | None, np.ndarray] = {}
        self._sweeper: asyncio.Task[None] | None = None
        voice_activity(self.settings)  # fail at start, not in the middle of the first call

    async def ready(self) -> dict[str, Any]:
        # The replica's resident memory: tests check a call that ended (however) gave back what it took.
        return {"calls": len(self.calls), "max_calls": self.rt.max_calls,
                "in_flight": sum(live.call.in_flight for live in self.calls.values()),
                "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1)}

    async def rtc_config(self, session_id: str | None = None) -> dict[str, Any]:
        """ICE servers for a client's peer connection. With a session, the TURN relay's credential is
        minted for that session (it expires after realtime.turn.ttl_s); without one, none is handed out."""
        servers = list(self.rt.ice_servers)
        if session_id is not None:
            await self.conversation.session_info.remote(session_id)  # 404 / 410 for a session not open
            servers = turn.ice_servers(self.rt, session_id)
        return {"ice_servers": [s.model_dump(exclude_none=True) for s in servers],
                "ice_transport_policy": self.rt.ice_transport_policy, "max_calls": self.rt.max_calls}

    async def offer(self, session_id: str, sdp: Any, kind: Any, language: str | None = "auto",
                    request_id: str = "-") -> dict[str, Any]:
        logs.request_id.set(request_id)
        sdp = peer.check_offer(sdp, kind)
        session, code = await self._admit(session_id, language)
        self._reserved += 1
        pc = None
        try:
            from aiortc import RTCPeerConnection

            channel: list[Any] = []

            def send(text: str) -> None:
                if channel and channel[0].readyState == "open":
                    channel[0].send(text)

            call = await self._new_call(session_id, session, code, send, request_id)
            call_id, language = call.call_id, call.language
            pc = RTCPeerConnection(peer.rtc_configuration(turn.ice_servers(self.rt, f"call-{call_id}"),
                                                          self.rt.ice_transport_policy))
            live = _Live(call, pc)
            self._watch(live, channel)
            audio, video = make_tracks(call.output, MediaClock())
            answer = await peer.answer(pc, sdp, audio, video if peer.offers_video(sdp) else None)
            live.video = video if peer.offers_video(sdp) else None
            self.calls[call_id] = live
        except BaseException:
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()
            raise
        finally:
            self._reserved -= 1
        event(log, "call_started", call_id=call_id, session_id=session_id, language=language,
              calls=len(self.calls))
        return {"call_id": call_id, "session_id": session_id, "sdp": answer, "type": "answer",
                "language": language}

    async def _admit(self, session_id: str, language: str | None) -> tuple[dict[str, Any], str]:
        """The session (404 / 410 before any work) and the language code of a call about to start, once
        the session's previous call is hung up (one each) and the cap leaves room; else 503."""
        self._ensure_sweeper()
        code = normalize_language(language)
        session = await self.conversation.session_info.remote(session_id)
        await self._replace_call_of(session_id)
        if len(self.calls) + self._reserved >= self.rt.max_calls:
            raise TooManyCallsError(f"the avatar is already in {self.rt.max_calls} calls; try again soon")
        return session, code

    async def _new_call(self, session_id: str, session: dict[str, Any], code: str,
                        send: Callable[[str], None], request_id: str) -> Call:
        """A call on the session's avatar and voice, whatever carries its media; events go out by ``send``."""
        idle = await self._idle_frames(session.get("avatar_id"), request_id)
        call_id = uuid.uuid4().hex
        language = code if code != "auto" else (session.get("language") or "auto")
        stages = _Stages(self.asr, self.conversation, self.avatar, session_id, session.get("voice_id"),
                         session.get("avatar_id"), call_id)
        return Call(call_id, session_id, language, self.rt, stages, voice_activity(self.settings), idle,
                    self.settings.render.fps, send)

    def _watch(self, live: _Live, channel: list[Any]) -> None:
        call, pc = live.call, live.pc

        @pc.on("datachannel")
        def on_datachannel(dc: Any) -> None:
            if dc.label != EVENTS_CHANNEL:
                return
            channel[:] = [dc]

            @dc.on("open")
            def on_open() -> None:
                call.emit(CALL_STARTED, call_id=call.call_id, session_id=call.session_id,
                          language=call.language)
                call.emit(call.state)

            @dc.on("message")
            def on_message(message: Any) -> None:
                data = decode(message, self.rt.max_event_chars)
                if data is not None and data["type"] == HANGUP:
                    live.ending = asyncio.ensure_future(self._end(call.call_id, "hangup"))
                else:
                    call.on_message(message)

            if dc.readyState == "open":
                on_open()

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio" and live.reader is None:
                live.reader = asyncio.ensure_future(call.consume(track))
            else:  # a camera, a second microphone: nobody listens, but aiortc queues what it decodes
                live.drains.append(asyncio.ensure_future(drain(track)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._end(call.call_id, "peer_gone" if pc.connectionState == "failed" else "closed")

    async def _idle_frames(self, avatar_id: str | None, request_id: str) -> np.ndarray:
        frames = self._idle.get(avatar_id)
        if frames is None:
            loop = await self.avatar.idle_loop.remote(avatar_id, request_id=request_id)
            frames = self._idle[avatar_id] = loop["frames"]
            while len(self._idle) > 4:
                self._idle.pop(next(iter(self._idle)))
        return frames

    async def call_info(self, call_id: str) -> dict[str, Any]:
        live = self._live(call_id)
        call = live.call
        return {"call_id": call_id, "session_id": call.session_id, "state": call.state, "turns": call.turns,
                "language": call.language,
                "connection": live.pc.connectionState if live.pc is not None else "websocket",
                "ice": peer.nominated_pair(live.pc),
                "seconds": round(time.monotonic() - call.started, 1), "stalls": call.output.stalls,
                "video_frames_skipped": call.output.skipped,
                "video_frames_cached": getattr(live.video, "cached_frames", None),
                "video_frames_encoded": getattr(live.video, "live_frames", None),
                "mic_frames": call.mic_frames, "mic_frames_dropped": call.mic_dropped,
                "vad_windows_skipped": call.listener.windows_skipped,
                "in_flight": call.in_flight}

    async def hang_up(self, call_id: str, request_id: str = "-") -> dict[str, Any]:
        logs.request_id.set(request_id)
        live = self._live(call_id)
        await self._end(call_id, "hangup")
        return {"call_id": call_id, "ended": True, "turns": live.call.turns}

    async def _replace_call_of(self, session_id: str) -> None:
        """A session holds one call: its history and language are one conversation's (a reloaded page
        calling again must not leave the old call talking into the same session)."""
        for call_id, live in list(self.calls.items()):
            if live.call.session_id == session_id:
                await self._end(call_id, "replaced")

    def _live(self, call_id: str) -> _Live:
        live = self.calls.get(call_id)
        if live is None:
            raise CallNotFoundError(f"no call {call_id[:64]!r} (it ended, or never began)")
        return live

    async def _end(self, call_id: str, reason: str) -> None:
        live = self.calls.get(call_id)
        if live is None or live.closing:
            return
        live.closing = True
        await live.call.close(reason)
        for task in [live.reader, *live.drains]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if live.pc is not None:
            with contextlib.suppress(Exception):
                await live.pc.close()
        if live.link is not None:
            live.link.finish()  # its media stream sends the last events (call_ended) and stops
        self.calls.pop(call_id, None)
        trim_heap()  # what the call held goes back to the OS, so RSS shows a call's real leftovers
        event(log, "call_ended", call_id=call_id, session_id=live.call.session_id, reason=reason,
              turns=live.call.turns, calls=len(self.calls))

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for call_id, live in list(self.calls.items()):
                reason = live.call.expired(now)
                if not reason and live.link is not None and live.link.gone(now, self.rt.peer_timeout_s):
                    reason = "peer_gone"  # a WebSocket call whose client went quiet (or never came)
                if reason:
                    await self._end(call_id, reason)

    # --- calls over the WebSocket fallback (the ingress relays one WebSocket per call) -----------------

    async def ws_open(self, session_id: str, language: str | None = "auto",
                      request_id: str = "-") -> dict[str, Any]:
        """A call without a peer connection: the caps, session check and call logic of ``offer``."""
        logs.request_id.set(request_id)
        session, code = await self._admit(session_id, language)
        self._reserved += 1
        try:
            links: list[SocketLink] = []
            call = await self._new_call(session_id, session, code, lambda text: links[0].send(text),
                                        request_id)
            call_id, language = call.call_id, call.language
            links.append(SocketLink(call.output, call.feed))
            self.calls[call_id] = _Live(call, None, links[0])
        finally:
            self._reserved -= 1
        call.emit(CALL_STARTED, call_id=call_id, session_id=session_id, language=language)
        call.emit(call.state)
        event(log, "call_started", call_id=call_id, session_id=session_id, language=language,
              transport="websocket", calls=len(self.calls))
        return {"call_id": call_id, "session_id": session_id, "language": language,
                "transport": "websocket"}

    async def ws_push(self, call_id: str, messages: list[Message]) -> None:
        """What the client sent since the last push: microphone frames and the data channel's JSON."""
        live = self._live(call_id)
        call, link = live.call, live.link
        if link is None or live.closing:
            return
        now = time.time()
        for message in messages:
            if isinstance(message, str):
                data = decode(message, self.rt.max_event_chars)
                if data is not None and data["type"] == HANGUP:
                    live.ending = asyncio.ensure_future(self._end(call_id, "hangup"))
                    return
                call.on_message(message)
                continue
            try:
                link.microphone(message, now)
            except FrameError as exc:
                link.bad_frames += 1
                if link.bad_frames == 1:  # once per call: the client is wrong, the call goes on
                    call.emit(ERROR, error={"code": "invalid_request", "message": str(exc)})
                    event(log, "bad_frame", level=logging.WARNING, call_id=call_id, error=str(exc)[:200])

    async def ws_media(self, call_id: str) -> AsyncIterator[list[Message]]:
        """The call's events and media, batch by batch, until it ends; a relay that stops reading (its
        client vanished) ends the call."""
        live = self._live(call_id)
        link = live.link
        if link is None or link.attached:
            raise CallNotFoundError(f"call {call_id[:64]!r} has no WebSocket media to send")
        try:
            async for batch in link.media():
                yield batch
        finally:
            if not link.finished:
                live.ending = asyncio.ensure_future(self._end(call_id, "peer_gone"))

    async def ws_close(self, call_id: str, reason: str = "peer_gone") -> None:
        await self._end(call_id, reason)

    async def check_health(self) -> None:
        self._ensure_sweeper()
