"""Language ID: whisper on each language segment of the output audio (segment times from the render
report). language_correctness_1_1 is 1 only if every segment is heard in its expected language."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.asr.metrics import error_rate
from realtime_avatar.pipeline import SpokenSegment


@dataclass(frozen=True)
class HeardSegment:
    language: str  # whisper's ISO code, e.g. "en"
    error_rate: float  # WER (CER for Chinese) of whisper's transcript against the segment's text


def hear_segments(asr: Any, pcm: np.ndarray, sample_rate: int,
                  segments: Sequence[SpokenSegment]) -> list[HeardSegment]:
    heard = []
    for segment in segments:
        piece = pcm[int(segment.start_s * sample_rate) : int(segment.end_s * sample_rate)]
        transcript = asr.transcribe(piece, sample_rate)  # language=None: whisper identifies it
        heard.append(HeardSegment(transcript.language, error_rate(segment.text, transcript.text,
                                                                  segment.language)))
    return heard


def language_result(heard: Sequence[str], expected: Sequence[str]) -> tuple[str, int]:
    """("EN/ZH/ES", 1 if every segment matched its expected language else 0)."""
    correct = len(heard) == len(expected) and all(h == e for h, e in zip(heard, expected, strict=True))
    return "/".join(h.upper() for h in heard), int(correct)
