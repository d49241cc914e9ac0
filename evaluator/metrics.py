"""Metrics measured on the rendered output.

- speaker_similarity: cosine between Resemblyzer (GE2E) embeddings of the output audio and the
  reference voice, clipped to 0..1.
- f0 contour: pYIN (librosa) at 16 kHz, 60-500 Hz, voiced frames only. f0_rmse_hz compares a run's
  contour with the scenario's baseline contour (the first stored run for the same scenario and engine
  config): DTW-aligned with |a-b| cost, RMSE of the Hz differences along the path.
- language: whisper language ID per language segment of the output audio (segment times from the
  render report); correct (1) only if every segment is heard in its expected language.
- lip_sync_coherence_0_1: per-frame mouth openness from dlib landmarks on the decoded video frames vs
  the per-frame RMS envelope of the decoded audio; the best Pearson correlation over lags of -2..+2
  frames, clipped at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np

from engines.media.audio import resample

F0_RATE = 16_000
F0_RANGE_HZ = (60.0, 500.0)
LIP_SYNC_MAX_LAG = 2


@lru_cache(maxsize=1)
def _voice_encoder() -> Any:
    from resemblyzer import VoiceEncoder

    return VoiceEncoder("cpu", verbose=False)


def speaker_embedding(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    from resemblyzer import preprocess_wav

    return _voice_encoder().embed_utterance(preprocess_wav(pcm.astype(np.float32), source_sr=sample_rate))


def speaker_similarity(
    pcm: np.ndarray, sample_rate: int, reference: np.ndarray, reference_rate: int
) -> float:
    a, b = speaker_embedding(pcm, sample_rate), speaker_embedding(reference, reference_rate)
    cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.clip(cosine, 0.0, 1.0))


def f0_contour(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """Voiced-frame F0 in Hz (unvoiced frames dropped)."""
    import librosa

    audio = resample(pcm, sample_rate, F0_RATE)
    f0, voiced, _ = librosa.pyin(audio, fmin=F0_RANGE_HZ[0], fmax=F0_RANGE_HZ[1], sr=F0_RATE,
                                 frame_length=1024, hop_length=160)
    return f0[voiced & np.isfinite(f0)].astype(np.float32)


def f0_rmse_hz(contour: np.ndarray, baseline: np.ndarray) -> float:
    if contour.size == 0 or baseline.size == 0:
        return float("nan")
    import librosa

    cost = np.abs(contour[:, None] - baseline[None, :]).astype(np.float64)
    _, path = librosa.sequence.dtw(C=cost)
    differences = contour[path[:, 0]] - baseline[path[:, 1]]
    return float(np.sqrt(np.mean(differences**2)))


def language_result(heard: Sequence[str], expected: Sequence[str]) -> tuple[str, int]:
    """("EN/ZH/ES", 1 if every segment matched else 0)."""
    correct = len(heard) == len(expected) and all(h == e for h, e in zip(heard, expected, strict=True))
    return "/".join(h.upper() for h in heard), int(correct)


def frame_envelope(pcm: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    edges = np.round(np.arange(n_frames + 1) * sample_rate / fps).astype(int)
    return np.array([np.sqrt(np.mean(pcm[a:b] ** 2)) if b > a else 0.0 for a, b in pairwise(edges)])


def lip_sync_coherence(
    mouth_open: np.ndarray, envelope: np.ndarray, max_lag: int = LIP_SYNC_MAX_LAG
) -> float:
    best = 0.0
    for lag in range(-max_lag, max_lag + 1):
        a = mouth_open[max(lag, 0) : len(mouth_open) + min(lag, 0)]
        b = envelope[max(-lag, 0) : len(envelope) + min(-lag, 0)]
        n = min(len(a), len(b))
        if n > 2 and np.std(a[:n]) > 0 and np.std(b[:n]) > 0:
            best = max(best, float(np.corrcoef(a[:n], b[:n])[0, 1]))
    return float(np.clip(best, 0.0, 1.0))
