"""The TTS engine contract: prepare a voice (cached by content hash), stream speech clause by clause.

Engines subclass :class:`TTSEngine` and implement ``_condition`` (reference audio -> conditioning)
and ``_speak`` (one clause -> float32 audio at ``sample_rate``); text planning, voice validation and
caching, pauses and the chunk stream live here so every engine behaves the same.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engines.errors import InputError
from engines.phones import Phone
from engines.tts.text import AUTO, Sentence, TextPlanner
from engines.tts.voice import Voice, content_hash, reference_audio


@dataclass(frozen=True)
class AudioChunk:
    pcm: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    text: str  # the clause spoken
    language: str
    # Where the chunk starts on its utterance's clock, in samples: a transport paces and syncs by it.
    offset_samples: int = 0
    # What the served TTS stage spent making this chunk (it stamps it; 0 where nobody timed it): the
    # avatar stage reports the sum as the render's server-side TTS time.
    synthesis_ms: float = 0.0
    # What was said when, from the engine's own alignment (seconds from the chunk's start); empty where
    # the engine does not know (the motion engine then reads the mouth from the audio alone).
    phones: tuple[Phone, ...] = ()

    @property
    def offset_seconds(self) -> float:
        return self.offset_samples / self.sample_rate


class TTSEngine(ABC):
    name: str = "tts"
    sample_rate: int = 24_000

    def __init__(
        self,
        limits: Mapping[str, int] | None = None,
        clause_chars: Mapping[str, int] | None = None,
        sentence_pause: float = 0.25,
        clause_pause: float = 0.1,
        voice_cache_size: int = 32,
    ) -> None:
        self.planner = TextPlanner(limits=limits, clause_chars=clause_chars)
        self.sentence_pause = sentence_pause
        self.clause_pause = clause_pause
        self.voice_cache_size = voice_cache_size
        self._voices: OrderedDict[str, Voice] = OrderedDict()
        self._voice_lock = threading.Lock()

    @abstractmethod
    def load(self) -> None:
        """Load models now instead of on first use (e.g. in a deployment's constructor)."""

    @abstractmethod
    def _condition(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        """Engine-specific conditioning for a validated mono reference clip."""

    @abstractmethod
    def _speak(self, text: str, language: str, voice: Voice | None) -> np.ndarray:
        """float32 mono speech at ``self.sample_rate`` for one clause."""

    def _speak_timed(self, text: str, language: str, voice: Voice | None) -> tuple[np.ndarray, list[Phone]]:
        """``_speak`` plus the phones' timing; engines that know their alignment override this."""
        return self._speak(text, language, voice), []

    def prepare_voice(self, pcm: np.ndarray, sample_rate: int) -> Voice:
        audio = reference_audio(pcm, sample_rate)
        voice_id = content_hash(audio, sample_rate)
        with self._voice_lock:
            cached = self._voices.get(voice_id)
            if cached is not None:
                self._voices.move_to_end(voice_id)
                return cached
        voice = Voice(voice_id, self.name, audio.size / sample_rate, self._condition(audio, sample_rate))
        with self._voice_lock:
            self._voices[voice_id] = voice
            while len(self._voices) > self.voice_cache_size:
                self._voices.popitem(last=False)
        return voice

    def forget_voice(self, voice: Voice) -> None:
        """Drop what this engine keeps of ``voice`` (a deleted voice leaves nothing behind)."""
        with self._voice_lock:
            self._voices.pop(voice.voice_id, None)

    def cached_voice(self, voice_id: str) -> Voice | None:
        with self._voice_lock:
            return self._voices.get(voice_id)

    def stream(
        self, text: str, language: str | None = AUTO, voice: Voice | None = None
    ) -> Iterator[AudioChunk]:
        """Speech clause by clause; each chunk ends with the pause that follows its clause.

        Input errors (empty/too long text, unknown language, foreign voice) are raised before the
        first chunk, so nothing half-spoken is ever produced for a bad request.
        """
        if voice is not None and voice.engine != self.name:
            raise InputError(
                f"voice {voice.voice_id[:12]} was prepared by {voice.engine!r}, not {self.name!r}",
                code="voice_mismatch",
            )
        sentences = self.planner.plan(text, language)
        return _stamp_offsets(self._chunks(sentences, voice))

    def _chunks(self, sentences: list[Sentence], voice: Voice | None) -> Iterator[AudioChunk]:
        for sentence in sentences:
            for i, clause in enumerate(sentence.clauses):
                speech, phones = self._speak_timed(clause, sentence.language, voice)
                speech = np.clip(speech, -1.0, 1.0)
                last = i == len(sentence.clauses) - 1
                pause = np.zeros(
                    int((self.sentence_pause if last else self.clause_pause) * self.sample_rate), np.float32
                )
                yield AudioChunk(np.concatenate([speech, pause]), self.sample_rate, clause, sentence.language,
                                 phones=tuple(phones))

    def synthesize(
        self, text: str, language: str | None = AUTO, voice: Voice | None = None
    ) -> tuple[np.ndarray, int]:
        chunks = [chunk.pcm for chunk in self.stream(text, language, voice)]
        return np.concatenate(chunks), self.sample_rate


def _stamp_offsets(chunks: Iterator[AudioChunk]) -> Iterator[AudioChunk]:
    """Number each chunk's first sample on the utterance clock (engines yield bare chunks)."""
    offset = 0
    try:
        for chunk in chunks:
            yield replace(chunk, offset_samples=offset)
            offset += chunk.pcm.size
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
