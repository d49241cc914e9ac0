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
from typing import Any, TypeVar

from engines.avatar.portrait import Portrait
from engines.errors import EmptyTextError, InputError
from engines.motion.reference import ReferenceMotion
from engines.tts.base import Voice
from realtime_avatar.config import Settings, get_settings
from realtime_avatar.encoding import MediaPart
from realtime_avatar.logs import event
from realtime_avatar.stages import (
    Animation,
    RenderedChunk,
    SpeechRecognition,
    SpeechSynthesis,
    UploadTooLargeError,
    bundled_portrait_png,
)
from realtime_avatar.store import build_store

log = logging.getLogger("realtime_avatar.pipeline")

ProgressCallback = Callable[[MediaPart], None]
T = TypeVar("T")


@dataclass
class StageTimer:
    """Wall-clock milliseconds spent per stage, summed over chunks."""

    ms: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, started: float) -> None:
        self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - started) * 1000


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


class AvatarPipeline:
    """The whole render in one process (CLI, evaluator, benchmarks), on the same stages and asset
    store as the Serve deployments, drained to an MP4."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = build_store(self.settings.store, self.settings.cache_path)

    @cached_property
    def speech(self) -> SpeechSynthesis:
        return SpeechSynthesis(self.settings, self.store)

    @cached_property
    def animation(self) -> Animation:
        return Animation(self.settings, self.store)

    @cached_property
    def asr(self) -> Any:
        """The ASR engine (the evaluator and benchmarks listen to renders with it)."""
        return SpeechRecognition(self.settings).engine

    @property
    def tts(self) -> Any:
        return self.speech.engine

    @property
    def renderer(self) -> Any:
        return self.animation.renderer

    def warm_up(self) -> None:
        """Load every engine's models now, so no request pays the load (or counts it as synthesis)."""
        self.speech.load()
        self.animation.load()

    def new_motion(self) -> Any:
        """Motion generators carry blink/head state across chunks, so each render gets its own."""
        return self.animation.new_motion()

    def prepare_portrait(self, image: bytes | str | Path | None = None) -> Portrait:
        data = bundled_portrait_png() if image is None else _read_source(
            image, self.settings.limits.max_upload_bytes, "image"
        )
        return self.animation.portrait(self.animation.prepare_avatar(data)["avatar_id"])

    def prepare_avatar(
        self, image: bytes | str | Path | None = None, motion_video: bytes | str | Path | None = None,
    ) -> tuple[Portrait, ReferenceMotion | None]:
        """The portrait, and with ``motion_video`` (the owner's 10-60 s video) its motion statistics."""
        if motion_video is None:
            return self.prepare_portrait(image), None
        limits = self.settings.limits
        data = (bundled_portrait_png() if image is None
                else _read_source(image, limits.max_upload_bytes, "image"))
        video = _read_source(motion_video, limits.max_motion_video_bytes, "motion_video")
        avatar_id = self.animation.prepare_avatar(data, video)["avatar_id"]
        return self.animation.portrait(avatar_id), self.animation.reference_motion(avatar_id)

    def prepare_voice(self, audio: bytes | str | Path | None = None) -> Voice | None:
        if audio is None:
            return None
        data = _read_source(audio, self.settings.limits.max_upload_bytes, "voice")
        return self.speech.voice(self.speech.prepare_voice(data)["voice_id"])

    def render_mp4(
        self,
        text: str,
        language: str,
        output: str | Path,
        *,
        portrait: Portrait | None = None,
        voice: Voice | None = None,
        progress: ProgressCallback | None = None,
        reference: ReferenceMotion | None = None,
    ) -> RenderReport:
        """TTS chunks -> the avatar stage's utterance renderer (the served stages' own loop) -> a file."""
        portrait = portrait or self.prepare_portrait()
        timer = StageTimer()
        started = time.perf_counter()
        chunks = _timed(self.tts.stream(text, language, voice), timer, "tts_ms")
        first = next(chunks, None)  # bad text fails here, before any output file exists
        if first is None:
            raise EmptyTextError("the text has nothing to speak")
        segments: list[SpokenSegment] = []
        utterance = self.animation.utterance(portrait, self.tts.sample_rate, "mp4", path=output,
                                             reference=reference)
        try:
            for chunk in _prepend(first, chunks):
                for part in utterance.feed(chunk):
                    segments = extend_segments(segments, part)
                    if progress:
                        progress(part)
            last = utterance.finish()
        except BaseException:
            utterance.abort()  # no half-written file at ``output``
            raise
        timer.ms.update(utterance.timings_ms)
        timer.ms["total_generation_ms"] = (time.perf_counter() - started) * 1000
        timings = {k: round(v, 1) for k, v in timer.ms.items()}
        audio_seconds = utterance.encoder.audio_samples / self.tts.sample_rate
        frames = last.frame_offset + last.frames
        report = RenderReport(Path(output), segments, audio_seconds, frames, timings)
        event(log, "render_done", path=output, audio_s=round(report.audio_seconds, 2), frames=frames,
              rtf=round(report.real_time_factor, 3), **timings)
        return report


def extend_segments(segments: list[SpokenSegment], chunk: MediaPart) -> list[SpokenSegment]:
    """The segments with ``chunk`` added (the CLI's render report and ``/v1/render``'s segment header)."""
    start_s = chunk.audio_offset_s
    end_s = start_s + chunk.audio_seconds
    if not chunk.text:  # later chunks of a streamed clause (and pauses) carry no text
        if not segments or not chunk.audio_seconds:
            return segments
        last = segments[-1]
        return [*segments[:-1], SpokenSegment(last.language, last.text, last.start_s, end_s)]
    if segments and segments[-1].language == chunk.language:
        last = segments[-1]
        joiner = "" if chunk.language == "zh" else " "  # Han clauses run on without spaces
        text = last.text + joiner + chunk.text
        return [*segments[:-1], SpokenSegment(last.language, text, last.start_s, end_s)]
    return [*segments, SpokenSegment(chunk.language, chunk.text, start_s, end_s)]


def _prepend(first: T, rest: Iterator[T]) -> Iterator[T]:
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


__all__ = ["AvatarPipeline", "MediaPart", "RenderReport", "RenderedChunk", "SpokenSegment",
           "bundled_portrait_png", "extend_segments"]
