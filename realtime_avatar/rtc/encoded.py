"""What a listening call sends, encoded once: Opus silence, and the idle loop as cached VP8 cycles.

A call that only listens sends the avatar's idle loop and silence. Encoding them again in every call
(libvpx for each frame, libopus for each 20 ms packet, each one a hop to aiortc's encoder thread and
back) was most of a listening call's CPU. Instead the tracks (``media.make_tracks``) hand aiortc
encoded packets, which it only packetizes (``Encoder.pack``: its own RTP timestamps from our ``pts``,
its own VP8 picture ids):

- audio: digital silence is one constant Opus packet (libopus's own output for 20 ms of zeros once its
  state has settled); a packet with sound is encoded here, mono, by one libopus encoder per call that
  also encodes ``SILENCE_TAIL`` packets of the silence after each sound (so its state is a settled
  silence again before the cached packet takes over, and the next sound starts from there);
- video: the idle loop at a stride is a fixed cycle of frames (``len(loop) / stride`` of them, from
  residue ``r``): it is encoded once per avatar, stride and residue, in a background thread, as a
  closed group of pictures (a keyframe, then frames that each refer only to the one before), which a
  decoder can be given from its keyframe on in any call, as often as the loop comes round. Speech, and
  an idle loop off the cycle's grid, are encoded live by aiortc as before.
"""

from __future__ import annotations

import concurrent.futures
import fractions
import logging
import threading
import weakref
from typing import Any

import numpy as np

log = logging.getLogger("realtime_avatar.rtc")

OPUS_RATE = 48_000
OPUS_BITRATE = 96_000  # aiortc's (for stereo); one voice in mono needs no more
# Packets of silence after a sound that are still encoded live (the encoder's lookahead and overlap
# flushed, its state settled) before the constant silence packet is sent instead.
SILENCE_TAIL = 5
VP8_BITRATE = 500_000  # aiortc's Vp8Encoder's starting bitrate
VIDEO_CLOCK = 90_000


def _opus_context() -> Any:
    import av

    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = OPUS_BITRATE
    codec.format = "s16"
    codec.layout = "mono"
    codec.options = {"application": "voip"}
    codec.sample_rate = OPUS_RATE
    codec.time_base = fractions.Fraction(1, OPUS_RATE)
    return codec


class VoiceEncoder:
    """Mono 16-bit 48 kHz PCM, 20 ms at a time, to Opus packets (one libopus encoder, one call)."""

    def __init__(self) -> None:
        import av

        self._av = av
        self.codec = _opus_context()
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        frame = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, np.int16).reshape(1, -1),
                                                 format="s16", layout="mono")
        frame.sample_rate, frame.pts = OPUS_RATE, self._pts
        frame.time_base = fractions.Fraction(1, OPUS_RATE)
        self._pts += len(pcm)
        return b"".join(bytes(p) for p in self.codec.encode(frame))


_silence: bytes | None = None


def opus_silence(samples: int = 960) -> bytes:
    """libopus's packet for ``samples`` of digital silence once its state has settled (3 bytes)."""
    global _silence
    if _silence is None:
        encoder = VoiceEncoder()
        packets = [encoder.encode(np.zeros(samples, np.int16)) for _ in range(10)]
        if len(set(packets[-3:])) != 1 or not packets[-1]:
            raise RuntimeError(f"libopus does not settle on one silence packet: {packets[-3:]!r}")
        _silence = packets[-1]
    return _silence


def vp8_context(width: int, height: int, bitrate: int = VP8_BITRATE) -> Any:
    """A libvpx VP8 encoder set up as aiortc's ``Vp8Encoder`` sets up its own (CBR, realtime), one
    thread (it runs in the background)."""
    import av

    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = width, height
    codec.bit_rate = bitrate
    codec.pix_fmt = "yuv420p"
    codec.gop_size = 3000
    codec.qmin, codec.qmax = 2, 56
    codec.options = {"bufsize": str(bitrate), "cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0",
                     "minrate": str(bitrate), "maxrate": str(bitrate), "noise-sensitivity": "4",
                     "overshoot-pct": "15", "partitions": "0", "static-thresh": "1", "undershoot-pct": "100"}
    codec.thread_count = 1
    return codec


def encode_cycle(frames: np.ndarray, stride: int, residue: int, fps: int) -> list[bytes]:
    """Frames ``residue, residue + stride, ...`` of the loop as one closed VP8 group of pictures: a
    keyframe, then inter frames, each timed ``stride`` frames after the one before."""
    import av

    height, width = frames.shape[1:3]
    codec = vp8_context(width, height)
    step = stride * (VIDEO_CLOCK // fps)
    out = []
    for k, i in enumerate(range(residue, len(frames), stride)):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts, frame.time_base = k * step, fractions.Fraction(1, VIDEO_CLOCK)
        if k == 0:
            frame.pict_type = av.video.frame.PictureType.I
        data = b"".join(bytes(p) for p in codec.encode(frame))
        if not data:  # lag-in-frames 0: every frame comes out at once; anything else is not this cycle
            raise RuntimeError(f"libvpx held back frame {i} of the idle loop")
        out.append(data)
    return out


class IdleCycles:
    """The encoded idle cycles of the last few idle loops (one per avatar), built on first use."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._entries: dict[tuple[int, ...], tuple[Any, concurrent.futures.Future[list[bytes]]]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="idle-vp8")

    def get(self, frames: np.ndarray, stride: int, residue: int, fps: int) -> list[bytes] | None:
        """The cycle of ``frames`` at ``stride`` from ``residue``, or None while it is being built (the
        first ask starts that) or where there is none (the loop is not a whole number of strides)."""
        if len(frames) % stride or len(frames) < 2 * stride:
            return None
        key = (id(frames), stride, residue, fps)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0]() is not frames:
                entry = (weakref.ref(frames), self._pool.submit(encode_cycle, frames, stride, residue, fps))
                self._entries[key] = entry
                while len(self._entries) > self.keep:
                    self._entries.pop(next(iter(self._entries)))
        future = entry[1]
        if not future.done() or future.cancelled():
            return None
        if future.exception() is not None:
            if not getattr(future, "_logged", False):
                future._logged = True  # type: ignore[attr-defined]
                log.warning("idle loop not cached (%s): encoded live", future.exception())
            return None
        return future.result()


IDLE_CYCLES = IdleCycles()
