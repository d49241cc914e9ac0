"""Procedural, seedable motion sources that advance one frame at a time (so chunking never shows)."""

from __future__ import annotations

import math

import numpy as np


def smoothing_coefficient(time_constant_s: float, fps: float) -> float:
    """Per-frame weight of a one-pole low-pass with the given time constant (0 s -> no smoothing)."""
    if time_constant_s <= 0:
        return 1.0
    return 1.0 - math.exp(-1.0 / (time_constant_s * fps))


def blink_profile(frames: int, closing_share: float = 0.4) -> np.ndarray:
    """Lid closure per frame of one blink: a quick eased close to 1, then a slower eased reopening."""
    frames = max(frames, 3)
    closing = max(1, round(frames * closing_share))
    opening = frames - closing
    close = 0.5 - 0.5 * np.cos(np.pi * np.arange(1, closing + 1) / closing)
    reopen = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, opening + 1) / (opening + 1))
    return np.concatenate([close, reopen]).astype(np.float32)


class BlinkScheduler:
    """Blinks at random start-to-start intervals drawn uniformly from ``interval_s``."""

    def __init__(
        self,
        rng: np.random.Generator,
        fps: float,
        *,
        interval_s: tuple[float, float],
        duration_s: float,
        first_s: tuple[float, float],
    ) -> None:
        self._rng = rng
        self._fps = fps
        self._interval_s = interval_s
        self._profile = blink_profile(round(duration_s * fps))
        self._countdown = self._frames(first_s)
        self._position = len(self._profile)  # index into the profile; past its end = eyes open

    def _frames(self, seconds_range: tuple[float, float]) -> int:
        return max(len(self._profile) + 1, round(self._rng.uniform(*seconds_range) * self._fps))

    def step(self) -> float:
        if self._countdown <= 0:
            self._position = 0
            self._countdown = self._frames(self._interval_s)
        self._countdown -= 1
        if self._position < len(self._profile):
            self._position += 1
            return float(self._profile[self._position - 1])
        return 0.0


class SmoothNoise:
    """Unit-variance smooth noise: a few sinusoids with random frequencies and phases.

    A pure function of time, so it continues seamlessly however the frames are chunked.
    """

    def __init__(
        self, rng: np.random.Generator, *, components: int, freq_range_hz: tuple[float, float]
    ) -> None:
        self._freqs = rng.uniform(*freq_range_hz, components)
        self._phases = rng.uniform(0.0, 2.0 * np.pi, components)
        self._amplitude = math.sqrt(2.0 / components)

    def __call__(self, seconds: np.ndarray) -> np.ndarray:
        angles = 2.0 * np.pi * np.outer(seconds, self._freqs) + self._phases
        return self._amplitude * np.sin(angles).sum(axis=1)


class Breather:
    """Breathing cycle in [-1, 1] (exhaled .. inhaled); each cycle draws its own rate."""

    def __init__(self, rng: np.random.Generator, fps: float, *, rate_hz: tuple[float, float]) -> None:
        self._rng = rng
        self._fps = fps
        self._rate_hz = rate_hz
        self._phase = float(rng.uniform(0.0, 2.0 * np.pi))
        self._rate = float(rng.uniform(*rate_hz))

    def step(self) -> float:
        self._phase += 2.0 * np.pi * self._rate / self._fps
        if self._phase >= 2.0 * np.pi:
            self._phase -= 2.0 * np.pi
            self._rate = float(self._rng.uniform(*self._rate_hz))
        return -math.cos(self._phase)
