"""The chunked render pipeline: text -> TTS chunks -> motion -> frames -> MP4.

Everything after the text works clause by clause, so the same code drains to a file (phase 1) and
will feed streamed fragments and WebRTC tracks later. Engines are built from config by name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from engines import registry
from engines.avatar.portrait import Portrait, prepare_portrait
from engines.errors import EmptyTextError, InputError
from engines.media.audio import load_audio, require_duration
from engines.media.mp4 import Mp4Writer
from engines.tts.base import AudioChunk, Voice
from realtime_avatar.cache import BlobCache, content_hash
from realtime_avatar.config import Settings, get_settings
from realtime_avatar.logs import event

log = logging.getLogger("realtime_avatar.pipeline")

ProgressCallback = Callable[["RenderedChunk"], None]


class UploadTooLargeError(InputError):
    code = "upload_too_large"
    status = 413


@dataclass
class StageTimer:
    """Wall-clock milliseconds spent per stage, summed over chunks."""

    ms: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, started: float) -> None:
        self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - started) * 1000


@dataclass
class RenderedChunk:
    index: int
    text: str
    language: str
    pcm: np.ndarray
    sample_rate: int
    frames: np.ndarray

    @property
    def audio_seconds(self) -> float:
        return self.pcm.size / self.sample_rate


@dataclass(frozen=True)
class SpokenSegment:
    """A run of consecutive chunks in one language, with its place in the output audio."""

    language: str
    text: str
    start_s: float
    end_s: float


@dataclass
class RenderReport:
    path: Path
    segments: list[SpokenSegment]
    audio_seconds: float
    frames: int
    timings_ms: dict[str, float]

    @property
    def real_time_factor(self) -> float:
        return self.timings_ms["total_generation_ms"] / 1000 / max(self.audio_seconds, 1e-9)


def bundled_portrait_png() -> bytes:
    """The default portrait: scikit-image's public-domain astronaut (ships inside the wheel)."""
    import cv2
    from skimage import data

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


def _read_source(source: bytes | str | Path, limit: int, what: str) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{what} file not found: {path}", code=f"{what}_not_found")
        if path.stat().st_size > limit:
            raise UploadTooLargeError(f"{what} file is larger than {limit} bytes")
        data = path.read_bytes()
    if len(data) > limit:
        raise UploadTooLargeError(f"{what} is larger than {limit} bytes")
    return data


class Animator:
    """Audio chunks of one utterance -> frames; motion state (blinks, head) carries across chunks.

    Shared by the file pipeline and the Serve avatar stage, which feeds it chunks as they stream in
    and sends each chunk's frames on in parts of at most ``part_frames``, so encoding and delivery
    start before a long clause is fully drawn.
    """

    def __init__(
        self, renderer: Any, motion: Any, portrait: Portrait, sample_rate: int, part_frames: int | None = None
    ) -> None:
        self.renderer, self.motion, self.portrait, self.sample_rate = renderer, motion, portrait, sample_rate
        self.part_frames = part_frames
        self._index = 0

    def feed(self, chunk: AudioChunk) -> Iterator[RenderedChunk]:
        """The chunk's frames in parts; the first part carries the chunk's audio and text."""
        track = self.motion.from_audio(chunk.pcm, chunk.sample_rate)
        step = self.part_frames or max(len(track), 1)
        for start in range(0, max(len(track), 1), step):
            first = start == 0
            yield RenderedChunk(
                self._index, chunk.text if first else "", chunk.language if first else "",
                chunk.pcm if first else np.zeros(0, np.float32), chunk.sample_rate,
                self._frames(track[start:start + step]),
            )
            self._index += 1

    def finish(self) -> RenderedChunk | None:
        """The frames of the audio's last partial frame, if any."""
        tail = self._frames(self.motion.flush())
        if not len(tail):
            return None
        return RenderedChunk(self._index, "", "", np.zeros(0, np.float32), self.sample_rate, tail)

    def _frames(self, track: Any) -> np.ndarray:
        if not len(track):
            size = self.portrait.size
            return np.zeros((0, size, size, 3), np.uint8)
        return self.renderer.render(self.portrait, track)


class AvatarPipeline:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._portraits = BlobCache(self.settings.cache_path / "portraits")
        self._voices = BlobCache(self.settings.cache_path / "voices")

    @cached_property
    def asr(self) -> Any:
        spec = self.settings.asr
        return registry.build("asr", spec.name, spec.options)

    @cached_property
    def tts(self) -> Any:
        spec = self.settings.tts
        # The text limits live in the config's limits section, shared by every TTS engine.
        options = {"limits": self.settings.limits.max_text_chars, **spec.options}
        return registry.build("tts", spec.name, options)

    @cached_property
    def renderer(self) -> Any:
        spec = self.settings.avatar
        return registry.build("avatar", spec.name, spec.options)

    def warm_up(self) -> None:
        """Load every engine's models now, so no request pays the load (or counts it as synthesis)."""
        for engine in (self.tts, self.renderer):
            load = getattr(engine, "load", None)
            if callable(load):
                load()

    def new_motion(self) -> Any:
        """Motion generators carry blink/head state across chunks, so each render gets its own."""
        spec = self.settings.motion
        options = {"seed": self.settings.render.seed, "fps": self.settings.render.fps, **spec.options}
        return registry.build("motion", spec.name, options)

    def prepare_portrait(self, image: bytes | str | Path | None = None) -> Portrait:
        data = bundled_portrait_png() if image is None else _read_source(
            image, self.settings.limits.max_upload_bytes, "image"
        )
        size = self.settings.render.size
        key = content_hash("portrait", data, str(size), self.settings.avatar.name)
        cached = self._portraits.get(key)
        if cached is not None:
            return Portrait.from_bytes(cached)
        portrait = prepare_portrait(data, size=size, max_pixels=self.settings.limits.max_image_pixels)
        self._portraits.put(key, portrait.to_bytes())
        event(log, "portrait_prepared", key=key[:12], size=size)
        return portrait

    def prepare_voice(self, audio: bytes | str | Path | None = None) -> Voice | None:
        if audio is None:
            return None
        limits = self.settings.limits
        data = _read_source(audio, limits.max_upload_bytes, "voice")
        key = content_hash("voice", data, self.settings.tts.name)
        cached = self._voices.get(key)
        if cached is not None:
            return Voice.from_bytes(cached)
        pcm, sample_rate = load_audio(data, max_seconds=limits.max_voice_seconds)
        require_duration(pcm, sample_rate, limits.min_voice_seconds)
        voice = self.tts.prepare_voice(pcm, sample_rate)
        self._voices.put(key, voice.to_bytes())
        event(log, "voice_prepared", key=key[:12], seconds=round(pcm.size / sample_rate, 2))
        return voice

    def stream(
        self, text: str, language: str, portrait: Portrait, voice: Voice | None, timer: StageTimer
    ) -> Iterator[RenderedChunk]:
        """Yield audio + frames clause by clause; the first chunk is ready after one clause of work."""
        animator = Animator(self.renderer, self.new_motion(), portrait, self.tts.sample_rate)
        for chunk in _timed(self.tts.stream(text, language, voice), timer, "tts_ms"):
            started = time.perf_counter()
            (rendered,) = animator.feed(chunk)  # one part: the file is written in whole chunks
            timer.add("avatar_render_ms", started)
            yield rendered
        started = time.perf_counter()
        tail = animator.finish()
        timer.add("avatar_render_ms", started)
        if tail is not None:
            yield tail

    def render_mp4(
        self,
        text: str,
        language: str,
        output: str | Path,
        *,
        portrait: Portrait | None = None,
        voice: Voice | None = None,
        progress: ProgressCallback | None = None,
    ) -> RenderReport:
        portrait = portrait or self.prepare_portrait()
        timer = StageTimer()
        started = time.perf_counter()
        chunks = self.stream(text, language, portrait, voice, timer)
        first = next(chunks, None)  # bad text fails here, before any output file exists
        if first is None:
            raise EmptyTextError("the text has nothing to speak")
        segments: list[SpokenSegment] = []
        audio_samples = 0
        render = self.settings.render
        with Mp4Writer(
            output, width=portrait.size, height=portrait.size, sample_rate=self.tts.sample_rate,
            fps=render.fps, crf=render.crf,
        ) as writer:
            for chunk in _prepend(first, chunks):
                encode_started = time.perf_counter()
                writer.write_audio(chunk.pcm)
                writer.write_frames(chunk.frames)
                timer.add("encode_ms", encode_started)
                segments = _extend_segments(segments, chunk, audio_samples / chunk.sample_rate)
                audio_samples += chunk.pcm.size
                if progress:
                    progress(chunk)
            frames = writer.frames_written
            encode_started = time.perf_counter()
        timer.add("encode_ms", encode_started)
        timer.ms["total_generation_ms"] = (time.perf_counter() - started) * 1000
        timings = {k: round(v, 1) for k, v in timer.ms.items()}
        report = RenderReport(Path(output), segments, audio_samples / self.tts.sample_rate, frames, timings)
        event(log, "render_done", path=output, audio_s=round(report.audio_seconds, 2), frames=frames,
              rtf=round(report.real_time_factor, 3), **timings)
        return report


def _extend_segments(
    segments: list[SpokenSegment], chunk: RenderedChunk, start_s: float
) -> list[SpokenSegment]:
    end_s = start_s + chunk.audio_seconds
    if not chunk.text:  # later chunks of a streamed clause (and pauses) carry no text
        if not segments or not chunk.pcm.size:
            return segments
        last = segments[-1]
        return [*segments[:-1], SpokenSegment(last.language, last.text, last.start_s, end_s)]
    if segments and segments[-1].language == chunk.language:
        last = segments[-1]
        joiner = "" if chunk.language == "zh" else " "  # Han clauses run on without spaces
        text = last.text + joiner + chunk.text
        return [*segments[:-1], SpokenSegment(last.language, text, last.start_s, end_s)]
    return [*segments, SpokenSegment(chunk.language, chunk.text, start_s, end_s)]


def _prepend(first: RenderedChunk, rest: Iterator[RenderedChunk]) -> Iterator[RenderedChunk]:
    yield first
    yield from rest


def _timed(items: Iterator[Any], timer: StageTimer, stage: str) -> Iterator[Any]:
    """Iterate, charging the time spent producing each item to ``stage``."""
    iterator = iter(items)
    while True:
        started = time.perf_counter()
        item = next(iterator, None)
        timer.add(stage, started)
        if item is None:
            return
        yield item
