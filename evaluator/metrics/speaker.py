"""speaker_similarity: cosine between Resemblyzer GE2E speaker embeddings (256-d, L2-normalised) of the
output audio and the reference voice, clipped to 0..1. Same recording ~1.0; another speaker ~0.4-0.7."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np


@lru_cache(maxsize=1)
def _encoder() -> Any:
    from resemblyzer import VoiceEncoder

    return VoiceEncoder("cpu", verbose=False)


def speaker_embedding(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    from resemblyzer import preprocess_wav

    # preprocess_wav resamples to 16 kHz, normalises loudness and trims silences (webrtcvad).
    return _encoder().embed_utterance(preprocess_wav(pcm.astype(np.float32), source_sr=sample_rate))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine clipped to 0..1: negative similarity carries no extra meaning for "same speaker?"."""
    cosine = float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
    return float(np.clip(cosine, 0.0, 1.0))


def speaker_similarity(
    pcm: np.ndarray, sample_rate: int, reference: np.ndarray, reference_rate: int
) -> float:
    a, b = speaker_embedding(pcm, sample_rate), speaker_embedding(reference, reference_rate)
    return cosine_similarity(a, b)
