"""What the avatar sends in a call: one media clock, an audio track that leads, a video track that follows.

Everything is placed on the call's audio clock (48 kHz samples since the call started). The audio track
asks for 20 ms at a time on the wall clock, the way aiortc's own players pace (``pts`` in samples,
``time_base`` 1/48000); an utterance starts on a video-frame boundary the first time the audio track
reaches it with data, and from then on its frame ``j`` is simply the frame whose time is its sample
``j * 1920``. So lips cannot drift from the voice however long the call, and a late part (the renderer
fell behind) pauses both together instead of letting them slide apart. When nothing is being said, the
video track plays the avatar's cached idle loop; speech was drawn on top of that loop at the phase where
it starts (``phase``), so the switch shows no jump.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr

AUDIO_RATE = 48_000
AUDIO_PACKET = 960  # 20 ms, the Opus frame WebRTC uses
VIDEO_CLOCK = 90_000  # RTP's video clock rate
# The audio track may fall this far behind the wall clock (a starved process) before the silence it owes
# is skipped: without that, every later reply would come out that much late, and the lag would only grow.
MAX_AUDIO_LAG_S = 0.1


@dataclass
class Utterance:
    """One sentence of the avatar's reply: its audio at 48 kHz and its frames, filled in as parts come."""

    turn: int
    text: str
    phase: int  # the idle-loop frame its motion was drawn from
    frames: list[np.ndarray] = field(default_factory=list)
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    start: int | None = None  # call sample where its audio begins (set when it starts to play)
    played: int = 0  # audio samples sent so far
    ended: bool = False  # every part is in
    first_audio_at: float | None = None  # wall clock, for the turn's timings
    first_frame_at: float | None = None
    stalled_samples: int = 0
    _resampler: soxr.ResampleStream | None = None
    _in_rate: int = 0

    def add(self, pcm: np.ndarray, sample_rate: int, frames: np.ndarray) -> None:
        if len(pcm):
            if self._resampler is None or self._in_rate != sample_rate:
                self._resampler, self._in_rate = soxr.ResampleStream(sample_rate, AUDIO_RATE, 1), sample_rate
            out = self._resampler.resample_chunk(np.asarray(pcm, np.float32))
            self.audio = np.concatenate([self.audio, _to_int16(out)])
        self.frames.extend(frames)

    def end(self) -> None:
        if self._resampler is not None:
            self.audio = np.concatenate([self.audio, _to_int16(self._resampler.resample_chunk(
                np.zeros(0, np.float32), last=True))])
        self.ended = True

    @property
    def end_sample(self) -> int | None:
        return None if self.start is None or not self.ended else self.start + len(self.audio)


def samples_per_frame(fps: int) -> int:
    return AUDIO_RATE // fps


def _to_int16(pcm: np.ndarray) -> np.ndarray:
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)


class AvatarOutput:
    """The call's outgoing media state, shared by its audio and video tracks (one event loop, no locks)."""

    def __init__(self, idle_frames: np.ndarray, fps: int, idle_stride: int = 1,
                 on_started: Callable[[Utterance], None] | None = None,
                 on_finished: Callable[[Utterance], None] | None = None) -> None:
        self.idle_frames, self.fps, self.idle_stride = idle_frames, fps, max(1, idle_stride)
        self.frame_samples = samples_per_frame(fps)
        self.queue: deque[Utterance] = deque()
        self._recent: Utterance | None = None  # the one that just ended: the video track may still show it
        self.audio_position = 0  # next call sample the audio track sends
        self.video_index = 0  # next frame the video track sends
        self.phase_offset = 0  # idle loop frame = video index - phase_offset
        self.on_started, self.on_finished = on_started, on_finished
        self.stalls = 0
        self.skipped = 0  # video frames dropped because they would have gone out late
        self.audio_skipped = 0  # samples of silence skipped because the audio track had fallen behind
        self.hold = False  # a reply prepared before the user's turn has surely ended waits, silent

    # --- the call's side -----------------------------------------------------------------------------

    def phase_now(self, lead_frames: int = 0) -> int:
        """The idle loop frame on screen ``lead_frames`` from now (where speech asked now should start)."""
        return (self.video_index + lead_frames - self.phase_offset) % len(self.idle_frames)

    def phase_after_queue(self) -> int | None:
        """The loop frame right after the queued speech, when every queued utterance is complete."""
        if not self.queue or not all(u.ended for u in self.queue):
            return None
        last = self.queue[-1]
        return (last.phase + len(last.frames)) % len(self.idle_frames)

    def enqueue(self, utterance: Utterance) -> None:
        self.queue.append(utterance)

    @property
    def speaking(self) -> bool:
        return bool(self.queue)

    def clear(self) -> list[Utterance]:
        """Barge-in: drop everything queued; the face goes back to the idle loop at once, at the pose the
        speech had reached (so only the mouth and the speech's own head motion snap back)."""
        dropped = list(self.queue)
        current = self.queue[0] if self.queue else None
        if current is not None and current.start is not None:
            shown = max(0, self.video_index * self.frame_samples - current.start) // self.frame_samples
            self.phase_offset = self.video_index - (current.phase + shown)
        self.queue.clear()
        self._recent = None
        return dropped

    # --- the tracks' side ----------------------------------------------------------------------------

    def skip_silence(self, samples: int) -> int:
        """Move the audio clock on by up to ``samples`` when nothing is playing (no utterance has begun:
        only silence is skipped, never speech); how many samples were skipped."""
        if self.queue and self.queue[0].start is not None:
            return 0
        self.audio_position += samples
        self.audio_skipped += samples
        return samples

    def audio_packet(self, samples: int = AUDIO_PACKET) -> np.ndarray:
        out = np.zeros(samples, np.int16)
        filled = 0
        while filled < samples and self.queue and not self.hold:
            here = self.audio_position + filled
            u = self.queue[0]
            if u.start is None:
                if not len(u.audio) and not u.ended:
                    break  # nothing to play yet: silence
                # Start on a frame boundary neither track has passed, so frame 0 shows with sample 0.
                u.start = max(-(-here // self.frame_samples), self.video_index) * self.frame_samples
                self.phase_offset = u.start // self.frame_samples - u.phase
                if self.on_started:
                    self.on_started(u)
            k = u.played
            if here < u.start + k:  # before it starts, or waiting out a stall
                filled += min(samples - filled, u.start + k - here)
                continue
            available = len(u.audio) - k
            if available > 0:
                n = min(available, samples - filled)
                out[filled:filled + n] = u.audio[k:k + n]
                if u.first_audio_at is None:
                    u.first_audio_at = time.time()
                u.played += n
                filled += n
                continue
            if u.ended:
                self._finish(u)
                continue
            # Underrun: the renderer is behind. Shift the utterance later by whole frames, so voice and
            # face wait together and stay on the frame grid.
            gap = -(-(samples - filled) // self.frame_samples) * self.frame_samples
            u.start += gap
            u.stalled_samples += gap
            self.stalls += 1
            break
        self.audio_position += samples
        return out

    def video_frame(self) -> np.ndarray:
        return self.next_video_frame()[0]

    def next_video_frame(self) -> tuple[np.ndarray, int | None]:
        """The next frame, and its place in the idle loop when it is an idle frame (None: speech)."""
        at = self.video_index * self.frame_samples
        frame = None
        for u in ([self._recent] if self._recent else []) + list(self.queue)[:1]:
            if u is None or u.start is None or at < u.start:
                continue
            if u.ended and at >= u.start + len(u.audio):
                continue
            j = (at - u.start) // self.frame_samples
            if u.frames:
                frame = u.frames[min(j, len(u.frames) - 1)]
                if u.first_frame_at is None:
                    u.first_frame_at = time.time()
        idle = None
        if frame is None:
            idle = (self.video_index - self.phase_offset) % len(self.idle_frames)
            frame = self.idle_frames[idle]
        self.video_index += 1
        return frame, idle

    def _finish(self, u: Utterance) -> None:
        self.queue.popleft()
        self._recent = u
        # The idle loop resumes exactly where the speech's settling frames left it.
        assert u.start is not None
        end_frame = (u.start + len(u.audio)) // self.frame_samples
        self.phase_offset = end_frame - (u.phase + len(u.frames))
        if self.on_finished:
            self.on_finished(u)


class MediaClock:
    """The call's wall-clock origin, taken when the first track asks for media."""

    def __init__(self) -> None:
        self.origin: float | None = None

    def start(self) -> float:
        if self.origin is None:
            self.origin = time.monotonic()
        return self.origin

    def elapsed(self) -> float:
        return time.monotonic() - self.start()

    async def wait_until(self, offset_s: float) -> None:
        delay = self.start() + offset_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def make_tracks(output: AvatarOutput, clock: MediaClock) -> tuple[object, object]:
    """The aiortc audio and video tracks that pace ``output`` on ``clock``.

    Both hand aiortc encoded packets where they can (``realtime_avatar.rtc.encoded``): the avatar's
    silence is one cached Opus packet and its sound is encoded here; the idle loop plays from its cached
    VP8 cycle whenever it is on the cycle's grid. Anything else (speech frames, the loop off the grid) is
    a frame that aiortc encodes, a keyframe when it follows the cached cycle (aiortc's encoder has not
    seen what the peer decoded). ``video.watch_keyframe_requests(sender)`` lets a peer's PLI / FIR end a
    cached cycle early (the next frame is a live keyframe) instead of waiting for the cycle's next turn.
    """
    import av
    from aiortc import MediaStreamTrack as base  # aiortc loads only where calls are made

    from realtime_avatar.rtc import encoded

    audio_base = fractions.Fraction(1, AUDIO_RATE)
    video_base = fractions.Fraction(1, VIDEO_CLOCK)
    keyframe = av.video.frame.PictureType.I

    class AvatarAudio(base):  # type: ignore[misc, valid-type]
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self._sent = 0
            self._voice: encoded.VoiceEncoder | None = None  # made at the first sound
            self._quiet = encoded.SILENCE_TAIL + 1  # silent packets since the last sound
            self._silence = encoded.opus_silence(AUDIO_PACKET)

        async def recv(self) -> av.Packet:
            # Late (the process was starved): catch up by skipping the silence owed, whole packets, so the
            # next reply is not held behind it. Speech already playing is sent in full, late or not.
            behind = int(clock.elapsed() * AUDIO_RATE) - self._sent
            if behind > MAX_AUDIO_LAG_S * AUDIO_RATE:
                self._sent += output.skip_silence(behind // AUDIO_PACKET * AUDIO_PACKET)
            await clock.wait_until(self._sent / AUDIO_RATE)
            if self.readyState != "live":
                raise _media_error()
            pcm = output.audio_packet(AUDIO_PACKET)
            self._quiet = 0 if pcm.any() else self._quiet + 1
            if self._quiet > encoded.SILENCE_TAIL:
                data = self._silence
            else:
                if self._voice is None:
                    self._voice = encoded.VoiceEncoder()
                data = self._voice.encode(pcm)
            packet = av.Packet(data)
            packet.pts, packet.time_base = self._sent, audio_base
            self._sent += AUDIO_PACKET
            return packet

    class AvatarVideo(base):  # type: ignore[misc, valid-type]
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self._cycle: list[bytes] | None = None  # the cached idle cycle being played...
            self._cycle_start = self._cycle_at = self._cycle_stride = 0  # ...its residue, place, stride
            self._keyframe = False  # the next frame aiortc encodes must be a keyframe
            self._asked = False  # the peer asked for a keyframe (PLI / FIR)
            self.cached_frames = self.live_frames = 0

        def watch_keyframe_requests(self, sender: Any) -> None:
            original = getattr(sender, "_send_keyframe", None)
            if not callable(original):
                return

            def asked() -> None:
                self._asked = True
                original()

            sender._send_keyframe = asked

        async def recv(self) -> av.VideoFrame | av.Packet:
            # A busy CPU made us late: skip to the frame that is due now (late video is dropped, never
            # the audio, and never shown late), so the picture stays on the voice.
            due = int(clock.elapsed() * output.fps)
            if due > output.video_index + 1:
                output.skipped += due - output.video_index
                output.video_index = due
            index = output.video_index
            await clock.wait_until(index / output.fps)
            if self.readyState != "live":
                raise _media_error()
            # While nobody speaks the loop goes out at a lower rate (fewer packets to send, and a cycle
            # of the loop small enough to cache); speech, and anything queued to be said, goes out at
            # the full rate.
            stride = 1 if output.speaking else output.idle_stride
            image, idle = output.next_video_frame()
            output.video_index += stride - 1
            pts = index * (VIDEO_CLOCK // output.fps)
            data = self._from_cycle(idle, stride)
            if data is not None:
                self.cached_frames += 1
                packet = av.Packet(data)
                packet.pts, packet.time_base = pts, video_base
                return packet
            self.live_frames += 1
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if self._keyframe:
                frame = frame.reformat(format="yuv420p")
                frame.pict_type = keyframe
                self._keyframe = False
            frame.pts, frame.time_base = pts, video_base
            return frame

        def _from_cycle(self, idle: int | None, stride: int) -> bytes | None:
            """The cached frame to send for idle loop frame ``idle`` at ``stride``, or None (encode it)."""
            asked, self._asked = self._asked, False
            loop = len(output.idle_frames)
            if self._cycle is not None:
                at = (self._cycle_at + 1) % len(self._cycle)
                if (not asked and idle is not None and stride == self._cycle_stride
                        and idle == (self._cycle_start + at * stride) % loop):
                    self._cycle_at = at
                    return self._cycle[at]
                self._cycle = None  # speech, a skip, a jump of the loop, or the peer lost the picture
                self._keyframe = True
            if idle is None or asked:
                return None
            cycle = encoded.IDLE_CYCLES.get(output.idle_frames, stride, idle % stride, output.fps)
            if cycle is None or idle >= stride:  # being built, or not at the cycle's keyframe
                return None
            self._cycle, self._cycle_start, self._cycle_at, self._cycle_stride = cycle, idle, 0, stride
            self._keyframe = False
            return cycle[0]

    return AvatarAudio(), AvatarVideo()


def _media_error() -> Exception:
    from aiortc.mediastreams import MediaStreamError

    return MediaStreamError()
