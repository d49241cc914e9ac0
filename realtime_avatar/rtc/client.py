"""A headless WebRTC caller (aiortc) that talks to the runtime the way the page does, and records it.

``RealtimeCall`` creates a chat session, offers one microphone track (``ScriptedMicrophone``: scripted
utterances with real, clock-paced silence between) and a data channel ``events`` (created before the
offer, so it is in the SDP), receives the avatar's audio and video, and records every received frame
(decoded PCM / RGB, its ``pts``, when the decoder handed it over and when its RTP packets arrived) and
every event with its arrival time. Signalling is non-trickle HTTP (``realtime_avatar.rtc.protocol``).

Two arrival times are kept per received frame because aiortc's own receiver holds frames back before
decoding (audio: four packets of jitter buffer, 80 ms; video: until the next frame starts), which a
browser would not do in the same way: ``arrived_at`` is when the frame's last RTP packet reached this
client (what the network delivered), ``received_at`` when ``track.recv()`` returned it. Measurements
use ``arrived_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
import soxr
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from realtime_avatar.config import IceServer
from realtime_avatar.rtc import protocol
from realtime_avatar.rtc.measure import AudioStream, SentUtterance, TimedEvent, speech_span
from realtime_avatar.rtc.peer import nominated_pair, rtc_configuration

log = logging.getLogger("realtime_avatar.rtc.client")

MIC_RATE = 48000
MIC_SAMPLES = 960  # 20 ms, what a browser's Opus encoder takes per packet
MIC_TIME_BASE = fractions.Fraction(1, MIC_RATE)
clock = time.perf_counter  # every time the harness records is on this clock


class RealtimeApiError(RuntimeError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class _Queued:
    pcm: np.ndarray  # float32 mono at MIC_RATE
    span: tuple[int, int]  # first / last non-silent sample
    label: str
    language: str
    text: str
    barge_in: bool
    done: asyncio.Future[SentUtterance]
    cursor: int = 0
    marks: dict[str, float] = field(default_factory=dict)


class ScriptedMicrophone(MediaStreamTrack):
    """An outgoing audio track: queued utterances, silence whenever none is queued.

    Paced like aiortc's own tracks (``pts`` in samples, ``time_base`` 1/48000), except that a frame
    leaves when its last sample is due, as a real microphone's would, not when its first one is. The
    silence carries a faint noise floor (``noise_dbfs``; None for digital zeros), as a microphone does.
    """

    kind = "audio"

    def __init__(self, noise_dbfs: float | None = -70.0, seed: int = 0) -> None:
        super().__init__()
        self._pending: deque[_Queued] = deque()
        self._start: float | None = None
        self._pts = 0
        self._noise = 0.0 if noise_dbfs is None else 10 ** (noise_dbfs / 20)
        self._rng = np.random.default_rng(seed)
        self.sent_at: list[float] = []  # when each frame was handed to the sender, in pts order

    def say(self, pcm: np.ndarray, sample_rate: int, *, label: str = "", language: str = "",
            text: str = "", barge_in: bool = False) -> asyncio.Future[SentUtterance]:
        """Queue an utterance; the future resolves with its send times once its last sample left."""
        audio = np.asarray(pcm, np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        if sample_rate != MIC_RATE:
            audio = soxr.resample(audio, sample_rate, MIC_RATE).astype(np.float32)
        span = speech_span(audio, MIC_RATE)
        if span is None:
            raise ValueError(f"utterance {label!r} is silent")
        done: asyncio.Future[SentUtterance] = asyncio.get_running_loop().create_future()
        self._pending.append(_Queued(audio, span, label, language, text, barge_in, done))
        return done

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = clock()
        else:
            self._pts += MIC_SAMPLES
        wait = self._start + (self._pts + MIC_SAMPLES) / MIC_RATE - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        now = clock()
        self.sent_at.append(now)
        block = self._rng.normal(0.0, self._noise, MIC_SAMPLES).astype(np.float32) if self._noise else (
            np.zeros(MIC_SAMPLES, np.float32))
        filled = 0
        while filled < MIC_SAMPLES and self._pending:
            item = self._pending[0]
            take = min(MIC_SAMPLES - filled, len(item.pcm) - item.cursor)
            block[filled : filled + take] += item.pcm[item.cursor : item.cursor + take]
            first, last = item.cursor, item.cursor + take  # [first, last) of the utterance in this frame
            item.marks.setdefault("started_at", now)
            if first <= item.span[0] < last:
                item.marks["speech_start_at"] = now
            if first <= item.span[1] < last:
                item.marks["speech_end_at"] = now
            item.cursor += take
            filled += take
            if item.cursor >= len(item.pcm):
                self._pending.popleft()
                sent = SentUtterance(item.label, item.language, item.text, item.marks["started_at"],
                                     item.marks["speech_start_at"], item.marks["speech_end_at"], now,
                                     item.barge_in)
                if not item.done.done():
                    item.done.set_result(sent)
        samples = np.clip(np.round(block * 32767), -32768, 32767).astype(np.int16)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = MIC_RATE
        frame.pts = self._pts
        frame.time_base = MIC_TIME_BASE
        return frame

    def stop(self) -> None:
        for item in self._pending:
            if not item.done.done():
                item.done.cancel()
        self._pending.clear()
        super().stop()


class _PacketArrivals:
    """When each frame's last RTP packet arrived, by RTP timestamp (hooked into one aiortc receiver).

    aiortc calls ``receiver._handle_rtp_packet`` for every packet the transport routes to it; wrapping
    that bound method on the instance is the one place where the arrival is visible before the jitter
    buffer. Decoded frames carry ``pts`` = RTP timestamp minus the first one the receiver mapped.
    """

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        self.last: dict[int, float] = {}
        self.first_timestamp: int | None = None
        original = receiver._handle_rtp_packet

        async def hooked(packet: Any, arrival_time_ms: int) -> None:
            if packet.payload:  # padding-only packets carry no media
                if self.first_timestamp is None:
                    self.first_timestamp = packet.timestamp
                self.last[packet.timestamp] = clock()
            await original(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = hooked

    def arrival(self, pts: int | None) -> float | None:
        if pts is None:
            return None
        mapper = getattr(self.receiver, "_RTCRtpReceiver__timestamp_mapper", None)
        origin = getattr(mapper, "_origin", None)
        if origin is None:
            origin = self.first_timestamp
        if origin is None:
            return None
        return self.last.get((pts + origin) % (1 << 32))


@dataclass
class ReceivedAudio:
    sample_rate: int = 48000
    chunks: list[np.ndarray] = field(default_factory=list)  # float32 mono per frame
    pts: list[int | None] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    arrived_at: list[float | None] = field(default_factory=list)

    def stream(self, timeline: str = "arrived") -> AudioStream:
        """Every received frame back to back, timed by packet arrival (or by ``received``)."""
        sizes = np.array([len(c) for c in self.chunks], np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else np.zeros(0, np.int64)
        pcm = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        times = _timeline(self.arrived_at, self.received_at, timeline)
        return AudioStream(pcm, self.sample_rate, starts, times)


def _timeline(arrived: list[float | None], received: list[float], timeline: str) -> np.ndarray:
    """Per-frame times: packet arrival where the hook saw it (else when decoded), or decode times."""
    if timeline == "received":
        return np.array(received, np.float64)
    return np.array([r if a is None else a for a, r in zip(arrived, received, strict=True)], np.float64)


@dataclass
class ReceivedVideo:
    frames: list[np.ndarray] = field(default_factory=list)  # RGB uint8 [h, w, 3]
    pts: list[int | None] = field(default_factory=list)
    time_base: float = 1 / 90000
    received_at: list[float] = field(default_factory=list)
    arrived_at: list[float | None] = field(default_factory=list)

    def times(self, timeline: str = "arrived") -> np.ndarray:
        return _timeline(self.arrived_at, self.received_at, timeline)

    def pts_seconds(self) -> np.ndarray:
        return np.array([np.nan if p is None else p * self.time_base for p in self.pts], np.float64)


@dataclass
class Recording:
    """Everything one call sent and received, on the harness clock."""

    session_id: str = ""
    call_id: str = ""
    language: str = ""
    started_at: float = 0.0
    connected_at: float | None = None
    ended_at: float = 0.0
    audio: ReceivedAudio = field(default_factory=ReceivedAudio)
    video: ReceivedVideo = field(default_factory=ReceivedVideo)
    events: list[TimedEvent] = field(default_factory=list)
    utterances: list[SentUtterance] = field(default_factory=list)
    answer: dict[str, Any] = field(default_factory=dict)
    ice: dict[str, str] | None = None  # the candidate types ICE connected with ({"local": "relay", ...})


class Signalling(Protocol):
    async def create_session(self, language: str, **fields: Any) -> dict[str, Any]: ...
    async def rtc_config(self, session_id: str) -> dict[str, Any]: ...
    async def offer(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def hang_up(self, call_id: str) -> None: ...
    async def aclose(self) -> None: ...


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:200]
    raise RealtimeApiError(response.status_code, code, message)


class HttpSignalling:
    """The runtime's HTTP endpoints (``protocol``): sessions, ICE config, the offer, hang-up."""

    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s)

    async def create_session(self, language: str, **fields: Any) -> dict[str, Any]:
        response = await self.http.post("/v1/chat/sessions", json={"language": language, **fields})
        _raise_for(response)
        return response.json()

    async def rtc_config(self, session_id: str) -> dict[str, Any]:
        response = await self.http.get("/v1/rtc/config", params={"session_id": session_id})
        if response.status_code == 404:
            return {"ice_servers": []}
        _raise_for(response)
        return response.json()

    async def offer(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post("/v1/rtc/offer", json=body)
        _raise_for(response)
        return response.json()

    async def hang_up(self, call_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            await self.http.delete(f"/v1/rtc/calls/{call_id}")

    async def aclose(self) -> None:
        await self.http.aclose()


def _mono_float(frame: AudioFrame) -> np.ndarray:
    """A decoded frame as float32 mono (aiortc's Opus decoder gives packed s16 stereo)."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar and channels > 1:  # [1, samples * channels], interleaved
        data = data.reshape(-1, channels).T
    scale = 32768.0 if np.issubdtype(data.dtype, np.integer) else 1.0
    return (data.astype(np.float32) / scale).mean(axis=0)


class RealtimeCall:
    """One call: ``async with RealtimeCall(url, "en") as call: await call.say(...)``."""

    def __init__(self, base_url: str | None = None, language: str = "auto", *,
                 signalling: Signalling | None = None, noise_dbfs: float | None = -70.0,
                 keep_video: bool = True, connect_timeout_s: float = 30.0,
                 session: dict[str, Any] | None = None, ice_transport_policy: str | None = None) -> None:
        if signalling is None:
            if base_url is None:
                raise ValueError("give base_url or signalling")
            signalling = HttpSignalling(base_url)
        self.signalling = signalling
        self.language = language
        self.session_fields = session or {}  # more of POST /v1/chat/sessions (voice_id, avatar_id)
        self.keep_video = keep_video
        self.ice_transport_policy = ice_transport_policy  # None: what the server's config says
        self.connect_timeout_s = connect_timeout_s
        self.mic = ScriptedMicrophone(noise_dbfs=noise_dbfs)
        self.recording = Recording(language=language)
        self.pc: RTCPeerConnection | None = None
        self.channel: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._arrivals: dict[str, _PacketArrivals] = {}
        self._news = asyncio.Event()
        self._opened = asyncio.Event()
        self._closed = False

    async def __aenter__(self) -> RealtimeCall:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- set-up ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        rec = self.recording
        rec.started_at = clock()
        session = await self.signalling.create_session(self.language, **self.session_fields)
        rec.session_id = session["session_id"]
        config = await self.signalling.rtc_config(rec.session_id)
        policy = self.ice_transport_policy or config.get("ice_transport_policy") or "all"
        # An empty list, not None: aiortc's default would ask Google's STUN server.
        servers = [IceServer.model_validate(entry) for entry in config.get("ice_servers") or []]
        self.pc = pc = RTCPeerConnection(rtc_configuration(servers, policy))
        self.channel = pc.createDataChannel(protocol.EVENTS_CHANNEL)
        self.channel.on("open", self._opened.set)
        self.channel.on("message", self._on_message)
        pc.addTrack(self.mic)
        pc.addTransceiver("video", direction="recvonly")
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate (non-trickle)
        body = {"session_id": rec.session_id, "sdp": pc.localDescription.sdp, "type": "offer",
                "language": self.language}
        answer = await self.signalling.offer(body)
        rec.answer = {k: v for k, v in answer.items() if k != "sdp"}
        rec.call_id = str(answer.get("call_id", ""))
        for transceiver in pc.getTransceivers():  # hook before any packet can arrive
            if transceiver.kind in ("audio", "video"):
                self._arrivals[transceiver.kind] = _PacketArrivals(transceiver.receiver)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(self._opened.wait(), self.connect_timeout_s)

    def _on_state(self) -> None:
        assert self.pc is not None
        log.debug("connection %s", self.pc.connectionState)
        if self.pc.connectionState == "connected" and self.recording.connected_at is None:
            self.recording.connected_at = clock()
            self.recording.ice = nominated_pair(self.pc)

    def _on_message(self, message: str | bytes) -> None:
        event = protocol.decode(message, max_chars=1 << 20)
        if event is None:
            log.warning("unreadable event: %r", message[:200])
            return
        self.recording.events.append(TimedEvent(clock(), event))
        self._news.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        reader = self._read_audio if track.kind == "audio" else self._read_video
        self._tasks.append(asyncio.ensure_future(reader(track)))

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        audio = self.recording.audio
        arrivals = self._arrivals.get("audio")
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = clock()
                audio.sample_rate = frame.sample_rate
                audio.chunks.append(_mono_float(frame))
                audio.pts.append(frame.pts)
                audio.received_at.append(now)
                audio.arrived_at.append(arrivals.arrival(frame.pts) if arrivals else None)

    async def _read_video(self, track: MediaStreamTrack) -> None:
        video = self.recording.video
        arrivals = self._arrivals.get("video")
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = clock()
                if frame.time_base is not None:
                    video.time_base = float(frame.time_base)
                video.frames.append(frame.to_ndarray(format="rgb24") if self.keep_video else np.zeros(0))
                video.pts.append(frame.pts)
                video.received_at.append(now)
                video.arrived_at.append(arrivals.arrival(frame.pts) if arrivals else None)

    # -- the script -----------------------------------------------------------------------------------

    async def say(self, pcm: np.ndarray, sample_rate: int, **meta: Any) -> SentUtterance:
        """Send an utterance through the microphone; returns once its last sample has left."""
        sent = await self.mic.say(pcm, sample_rate, **meta)
        self.recording.utterances.append(sent)
        return sent

    def send(self, kind: str, **fields: Any) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(protocol.encode(kind, **fields))

    async def wait_event(self, kind: str | tuple[str, ...], *, after: float = 0.0, timeout_s: float = 30.0,
                         where: Callable[[dict[str, Any]], bool] | None = None) -> TimedEvent | None:
        """The first event of ``kind`` that arrived at or after ``after`` (and passes ``where``), waiting
        up to ``timeout_s`` for it; None on time-out."""
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

    # -- tear-down ------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        rec = self.recording
        rec.ended_at = clock()
        try:
            if self.channel is not None and self.channel.readyState == "open":
                self.send(protocol.HANGUP)
                await asyncio.sleep(0.05)  # let the SCTP stack put the hang-up on the wire
            self.mic.stop()
            if self.pc is not None:
                await self.pc.close()
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        finally:
            await self.signalling.aclose()
