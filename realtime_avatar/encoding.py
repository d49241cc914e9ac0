"""The one chunk -> container loop: rendered chunks in, MP4 / fragmented MP4 bytes out, with timing.

The CLI (an MP4 file), ``/v1/render`` (a whole MP4 or a stream of fragments) and ``/v1/chat`` (one
fragmented clip per sentence) all encode through :class:`ChunkEncoder`, in the avatar stage's process:
raw frames never cross Ray, only encoded bytes do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from engines.media.mp4 import FragmentedMp4Writer, Mp4Writer
from realtime_avatar.config import RenderSettings

if TYPE_CHECKING:  # the stages build utterance renderers from this module
    from engines.tts.base import AudioChunk
    from realtime_avatar.stages import Animator, RenderedChunk

Container = Literal["mp4", "fmp4"]
# What MediaSource.isTypeSupported needs for the clips: H.264 High (x264's default for yuv420p) + AAC-LC.
FMP4_MIME = 'video/mp4; codecs="avc1.64001e, mp4a.40.2"'


@dataclass
class MediaPart:
    """Encoded bytes (may be empty mid-fragment) and the utterance time the chunk behind them covers."""

    data: bytes
    text: str
    language: str
    audio_offset_s: float  # where this chunk's audio starts on the utterance clock
    audio_seconds: float
    frame_offset: int
    frames: int
    # Server-side stage totals of the whole utterance (tts_ms, avatar_render_ms, encode_ms), set by the
    # avatar stage on an utterance's last part only.
    timings_ms: dict[str, float] = field(default_factory=dict)


class ChunkEncoder:
    """Writes chunks audio-first (the muxer holds video until its audio is there) and hands out bytes.

    ``close`` pads the shorter track and returns the tail; ``abort`` ends a cut stream without the
    closing box (and removes a half-written file), so nothing half-written passes for whole.
    """

    def __init__(self, writer: Mp4Writer | FragmentedMp4Writer) -> None:
        self.writer = writer
        self.audio_samples = 0
        self.frames = 0

    @classmethod
    def open(
        cls, container: Container, *, size: int, sample_rate: int, render: RenderSettings,
        path: str | Path | None = None,
    ) -> ChunkEncoder:
        common = {"width": size, "height": size, "sample_rate": sample_rate, "fps": render.fps,
                  "crf": render.crf}
        if container == "fmp4":
            return cls(FragmentedMp4Writer(**common, keyframe_seconds=render.fragment_seconds))
        if path is None:
            raise ValueError("an MP4 (not fragmented) is written to a file: give a path")
        return cls(Mp4Writer(path, **common))

    def write(self, chunk: RenderedChunk) -> MediaPart:
        self.writer.write_audio(chunk.pcm)
        self.writer.write_frames(chunk.frames)
        part = MediaPart(
            self.writer.drain(), chunk.text, chunk.language, chunk.audio_offset / chunk.sample_rate,
            chunk.audio_seconds, chunk.frame_offset, len(chunk.frames),
        )
        self.audio_samples += chunk.pcm.size
        self.frames += len(chunk.frames)
        return part

    def close(self) -> bytes:
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


class UtteranceRenderer:
    """Audio chunks of one utterance -> encoded media parts: motion, frames and muxing in one process.

    The async avatar deployment and the synchronous CLI both drive it chunk by chunk (``feed``), so the
    chunk -> writer loop exists once. ``finish`` closes the container and returns its last part.
    """

    def __init__(self, animator: Animator, encoder: ChunkEncoder) -> None:
        self.animator, self.encoder = animator, encoder
        self.timings_ms = {"avatar_render_ms": 0.0, "encode_ms": 0.0}

    def feed(self, chunk: AudioChunk) -> Iterator[MediaPart]:
        """The chunk's parts as each is drawn and encoded (a long chunk leaves in several parts)."""
        parts = self.animator.feed(chunk)
        while True:
            started = time.perf_counter()
            part = next(parts, None)
            self._charge("avatar_render_ms", started)
            if part is None:
                return
            yield self._encode(part)

    def finish(self) -> MediaPart:
        """The frames of the audio's last partial frame and the container's closing bytes."""
        started = time.perf_counter()
        tail = self.animator.finish()
        self._charge("avatar_render_ms", started)
        end_s = self.encoder.audio_samples / self.animator.sample_rate
        part = (self._encode(tail) if tail is not None
                else MediaPart(b"", "", "", end_s, 0.0, self.encoder.frames, 0))
        started = time.perf_counter()
        part.data += self.encoder.close()
        self._charge("encode_ms", started)
        return part

    def _encode(self, chunk: RenderedChunk) -> MediaPart:
        started = time.perf_counter()
        part = self.encoder.write(chunk)
        self._charge("encode_ms", started)
        return part

    def _charge(self, stage: str, started: float) -> None:
        self.timings_ms[stage] += (time.perf_counter() - started) * 1000

    def abort(self) -> None:
        self.encoder.abort()
