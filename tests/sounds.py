"""Sounds that are not speech, for checking that ASR hears them as nothing (issue 15, item 7)."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

RATE = 16_000
_SCALE_HZ = (262, 294, 330, 349, 392, 440, 494, 523)  # C major, C4..C5
_CHORD_HZ = (131, 165, 196)  # C3 E3 G3


def _harmonic(freq_hz: float, t: np.ndarray, partials: int, falloff: float) -> np.ndarray:
    return sum(np.sin(2 * np.pi * freq_hz * k * t) / k**falloff for k in range(1, partials + 1))


def music(seconds: float = 5.0, seed: int = 1, rate: int = RATE) -> np.ndarray:
    """A plucked melody of random scale notes, four a second, over a held chord: tonal and rhythmic like
    music, with no formant structure of a voice."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = 0.3 * sum(_harmonic(f, t, 4, 1.5) for f in _CHORD_HZ)
    beat = rate // 4
    for start in range(0, t.size, beat):
        note = t[: min(int(0.6 * rate), t.size - start)]
        out[start:start + note.size] += _harmonic(rng.choice(_SCALE_HZ), note, 5, 1.0) * np.exp(-6 * note)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def noise(seconds: float = 5.0, seed: int = 7, rate: int = RATE, level: float = 0.5) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-level, level, int(seconds * rate)).astype(np.float32)


def wav_bytes(pcm: np.ndarray, rate: int = RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, pcm, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
