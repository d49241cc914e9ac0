"""lip_sync_coherence_0_1: does the drawn mouth open when the audio is loud?

Per video frame: mouth openness from dlib landmarks fitted on the decoded frame (FaceMeter) and the RMS
of the decoded audio over that frame's time span. The score is the best Pearson correlation of the two
series over lags of -2..+2 frames (+-80 ms at 25 fps, the usual audio-video sync tolerance), clipped at
0. A mouth that never moves has no correlation and scores 0.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from engines.avatar.measure import FaceMeter

MAX_LAG_FRAMES = 2
FLAT = 1e-6  # a series with less spread than this is constant (float32 noise), so has no correlation


def mouth_openness(frames: np.ndarray) -> np.ndarray:
    return FaceMeter().measure_video(frames).mouth_open


def frame_envelope(pcm: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    edges = np.round(np.arange(n_frames + 1) * sample_rate / fps).astype(int)
    return np.array([np.sqrt(np.mean(pcm[a:b] ** 2)) if b > a else 0.0 for a, b in pairwise(edges)])


def lip_sync_coherence(mouth_open: np.ndarray, envelope: np.ndarray, max_lag: int = MAX_LAG_FRAMES) -> float:
    best = 0.0
    for lag in range(-max_lag, max_lag + 1):  # lag > 0: the mouth trails the audio
        a = mouth_open[max(lag, 0) : len(mouth_open) + min(lag, 0)]
        b = envelope[max(-lag, 0) : len(envelope) + min(-lag, 0)]
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
        if n > 2 and np.std(a) > FLAT and np.std(b) > FLAT:
            best = max(best, float(np.corrcoef(a, b)[0, 1]))
    return float(np.clip(best, 0.0, 1.0))
