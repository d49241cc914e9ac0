"""The WebSocket fallback's side of a call: what replaces the peer connection when ICE cannot connect.

The call itself (``Call``: listener, turns, ``AvatarOutput``) is the same as over WebRTC; only the
transport differs. Microphone frames come in as ``wire`` messages (resampled here to the listener's
16 kHz); the data channel's events go out as the same JSON text; and one loop paced on the call's media
clock takes the next audio (20 ms packets) and video frame from ``AvatarOutput`` exactly as the WebRTC
tracks do, audio first, so an utterance starts on the frame that shows its first sample. Each tick
(one video frame) is one batch of messages: the relay in front sends them in order. A late tick skips
the video frames that are due (never the audio), as the WebRTC video track does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import numpy as np
import soxr

from realtime_avatar.rtc import wire
from realtime_avatar.rtc.listener import SAMPLE_RATE
from realtime_avatar.rtc.media import AUDIO_PACKET, AvatarOutput, MediaClock

ATTACH_S = 10.0  # a call whose media stream is not read by then has lost its client
MAX_EVENTS = 1000  # events waiting for the next tick (a tick drains them all; this only bounds a stall)

Message = bytes | str


class SocketLink:
    """One WebSocket call's transport state (one event loop, no locks)."""

    def __init__(self, output: AvatarOutput, feed: Callable[[np.ndarray, float], None]) -> None:
        self.output, self.feed = output, feed
        self.clock = MediaClock()
        self.events: deque[str] = deque(maxlen=MAX_EVENTS)
        self.news = asyncio.Event()
        self.opened = time.monotonic()
        self.last_mic: float | None = None  # time.monotonic() of the last microphone frame
        self.attached = False  # a media stream is being read
        self.finished = False  # the call ended and its last events are queued
        self.sent_audio = 0  # call samples sent
        self.frames_sent = 0
        self.bad_frames = 0
        self._resampler: soxr.ResampleStream | None = None
        self._rate = 0

    # --- up --------------------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        """The call's event sink (the data channel's ``send``)."""
        self.events.append(text)
        self.news.set()

    def microphone(self, data: bytes, now: float) -> None:
        rate, pcm = wire.parse_mic(data)  # FrameError for anything else
        self.last_mic = time.monotonic()
        audio = pcm.astype(np.float32) / 32768.0
        if rate != SAMPLE_RATE:
            if self._resampler is None or self._rate != rate:
                self._resampler, self._rate = soxr.ResampleStream(rate, SAMPLE_RATE, 1), rate
            audio = self._resampler.resample_chunk(audio)
        if len(audio):
            self.feed(np.asarray(audio, np.float32), now)

    def gone(self, now: float, peer_timeout_s: float) -> bool:
        """The client is gone though its socket may not say so yet: nobody came for the media within
        ``ATTACH_S`` of the call's start, or its microphone (a frame every 20 ms, muted or not) sent
        nothing for ``peer_timeout_s`` (a frozen tab, a dead link without a FIN), as a WebRTC call's."""
        if not self.attached:
            return now - self.opened > ATTACH_S
        return self.last_mic is not None and now - self.last_mic > peer_timeout_s

    def finish(self) -> None:
        self.finished = True
        self.news.set()

    # --- down ------------------------------------------------------------------------------------------

    async def media(self) -> AsyncIterator[list[Message]]:
        """Batches of messages until the call ends: events as soon as they are emitted, media one video
        frame (and the audio up to its end) at a time on the call's clock."""
        out = self.output
        frame_samples = out.frame_samples
        self.attached = True
        self.clock.start()
        while True:
            if self.events:
                yield self._drain()
            if self.finished:
                return
            due = int(self.clock.elapsed() * out.fps)
            if due > out.video_index + 1:  # a busy CPU made us late: the frame due now, not the late ones
                out.skipped += due - out.video_index
                out.video_index = due
            index = out.video_index
            delay = self.clock.start() + index / out.fps - time.monotonic()
            if delay > 0:
                self.news.clear()
                if not self.events and not self.finished:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.news.wait(), delay)
                if self.events or self.finished or self.clock.start() + index / out.fps > time.monotonic():
                    continue
            # Audio first, up to the end of this frame: it is what starts an utterance on a frame.
            batch: list[Message] = []
            while self.sent_audio < (index + 1) * frame_samples:
                batch.append(wire.audio_message(self.sent_audio, out.audio_packet(AUDIO_PACKET)))
                self.sent_audio += AUDIO_PACKET
            stride = 1 if out.speaking else out.idle_stride
            frame = out.video_frame()
            out.video_index += stride - 1
            batch.append(wire.video_message(index * frame_samples, wire.encode_jpeg(frame)))
            self.frames_sent += 1
            yield batch

    def _drain(self) -> list[Message]:
        events: list[Message] = list(self.events)
        self.events.clear()
        return events
