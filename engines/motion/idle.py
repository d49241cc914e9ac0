"""A periodic idle motion: blinks, breathing and head micro-motion that repeat exactly every ``frames``.

Realtime calls draw one loop of it per avatar once and play it whenever nobody speaks, so listening costs
no rendering at all. Speech motion is laid on top of the same loop (``MotionGenerator(base=...)``) at the
loop phase where the speech starts, so switching between the cached idle frames and rendered speech shows
no jump of head pose, lids or breath.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engines.errors import InputError
from engines.motion.procedural import blink_profile
from engines.motion.track import MotionTrack


class IdleLoop:
    """``track(start, n)``: the idle motion of absolute frames ``start .. start + n`` (taken modulo the loop).

    Head angles are sums of sinusoids with whole numbers of cycles per loop (so the end meets the start
    with matching slope), breathing a whole number of breaths, blinks at seeded times inside the loop with
    the wrap-around gap as long as any other.
    """

    def __init__(
        self,
        seed: int = 0,
        fps: float = 25.0,
        *,
        loop_s: float = 8.0,
        head_deg: Sequence[float] = (1.5, 1.0, 0.6),
        head_cycles: Sequence[int] = (1, 2, 3),
        blink_interval_s: Sequence[float] = (2.5, 5.0),
        blink_duration_s: float = 0.15,
        breath_rate_hz: float = 0.25,
    ) -> None:
        if fps <= 0 or loop_s <= 0:
            raise InputError("fps and loop_s must be positive")
        self.fps = float(fps)
        self.frames = max(2, round(loop_s * fps))
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1D1E]))
        phase = 2 * np.pi * np.arange(self.frames) / self.frames
        angles = []
        for amplitude in head_deg:
            phases = rng.uniform(0, 2 * np.pi, len(head_cycles))
            waves = sum(np.sin(k * phase + p) for k, p in zip(head_cycles, phases, strict=True))
            angles.append(amplitude * np.sqrt(2.0 / len(head_cycles)) * waves)
        breaths = max(1, round(breath_rate_hz * self.frames / self.fps))
        blink = np.zeros(self.frames)
        profile = blink_profile(round(blink_duration_s * fps))
        at = rng.uniform(*blink_interval_s) * fps / 2  # the first blink half an interval in
        while at + len(profile) + blink_interval_s[0] * fps / 2 < self.frames:
            start = int(at)
            blink[start:start + len(profile)] = profile
            at += rng.uniform(*blink_interval_s) * fps
        zeros = np.zeros(self.frames)
        self._loop = MotionTrack(self.fps, mouth_open=zeros, mouth_width=zeros, blink=blink,
                                 yaw=angles[0], pitch=angles[1], roll=angles[2],
                                 breath=-np.cos(breaths * phase)).as_array()

    def track(self, start: int, n: int) -> MotionTrack:
        index = (int(start) + np.arange(max(n, 0))) % self.frames
        return MotionTrack.from_array(self._loop[index], self.fps)

    def loop(self) -> MotionTrack:
        return self.track(0, self.frames)
