"""Audio-driven motion: mouth from the speech itself, plus blinks, head micro-motion and breathing.

The generator is a stream processor: feed TTS chunks of any length to ``from_audio`` and it returns the
frames they complete, carrying leftover samples, filter state, the blink schedule and the head-motion
clock to the next call. Chunked output therefore equals one-shot output for the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engines.errors import InputError
from engines.motion.features import DEFAULT_WINDOW_S, FrameAnalyzer, FrameFeatures
from engines.motion.idle import IdleLoop
from engines.motion.procedural import BlinkScheduler, Breather, SmoothNoise, smoothing_coefficient
from engines.motion.track import MotionTrack
from engines.phones import Phone

DEFAULT_FPS = 25


class MotionGenerator:
    """Turn speech audio (or silence) into a frame-aligned ``MotionTrack``.

    Mouth: speech-band level, normalised to a running peak (so quiet and loud voices both articulate),
    gated below ``gate_db``, scaled so the loudest vowels reach ``open_gain`` (1 is kept for shouting)
    and down for unvoiced frames (fricatives barely open the jaw), then smoothed with a fast attack and
    slower release. Width follows the F2/F1 band balance of voiced frames.
    Head angles are smooth noise whose amplitude grows with a slow speech-activity envelope, plus a
    small nod on emphasis; blinks and breaths are random but seeded.

    With ``base`` (an :class:`IdleLoop`), blinks, breath and the idle head motion come from that loop at
    frames ``start_frame`` onwards, and speech adds its mouth, the extra head motion and the nods on
    top: the first frame equals the loop's frame there, and ``settle`` fades back onto the loop, so a
    realtime call switches between cached idle frames and speech without a jump.
    """

    def __init__(
        self,
        seed: int = 0,
        fps: float = DEFAULT_FPS,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        attack_s: float = 0.03,
        release_s: float = 0.07,
        width_smoothing_s: float = 0.08,
        activity_s: float = 0.5,
        emphasis_s: float = 0.12,
        gate_db: float = -50.0,
        level_range_db: float = 30.0,
        peak_floor_db: float = -35.0,
        peak_decay_db_per_s: float = 3.0,
        open_gain: float = 0.8,
        open_gamma: float = 1.6,
        unvoiced_open: float = 0.35,
        tilt_center_db: float = -15.0,
        tilt_scale_db: float = 8.0,
        blink_interval_s: Sequence[float] = (3.0, 6.0),
        blink_duration_s: float = 0.15,
        first_blink_s: Sequence[float] = (1.0, 3.0),
        head_idle_deg: Sequence[float] = (1.5, 1.0, 0.6),
        head_speaking_deg: Sequence[float] = (3.0, 2.0, 1.2),
        head_limit_deg: Sequence[float] = (6.0, 4.0, 3.0),
        head_freq_hz: Sequence[float] = (0.05, 0.35),
        head_components: int = 4,
        nod_deg: float = 2.0,
        breath_rate_hz: Sequence[float] = (0.2, 0.3),
        base: IdleLoop | None = None,
        start_frame: int = 0,
    ) -> None:
        if fps <= 0:
            raise InputError(f"fps must be positive, got {fps}")
        self.seed = seed
        self.fps = float(fps)
        self._analyzer = self._new_analyzer(window_s)
        self._attack = smoothing_coefficient(attack_s, self.fps)
        self._release = smoothing_coefficient(release_s, self.fps)
        self._width_rate = smoothing_coefficient(width_smoothing_s, self.fps)
        self._activity_rate = smoothing_coefficient(activity_s, self.fps)
        self._emphasis_rate = smoothing_coefficient(emphasis_s, self.fps)
        self._gate_db = gate_db
        self._range_db = level_range_db
        self._peak_floor_db = peak_floor_db
        self._peak_decay_db = peak_decay_db_per_s / self.fps
        self._open_gain = open_gain
        self._open_gamma = open_gamma
        self._unvoiced_open = unvoiced_open
        self._tilt_center_db = tilt_center_db
        self._tilt_scale_db = tilt_scale_db
        self._head_idle = np.asarray(head_idle_deg, np.float64)
        self._head_speaking = np.asarray(head_speaking_deg, np.float64)
        self._head_limit = np.asarray(head_limit_deg, np.float64)
        self._nod_deg = nod_deg

        blink_rng, breath_rng, yaw_rng, pitch_rng, roll_rng = (
            np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(5)
        )
        self._blinks = BlinkScheduler(
            blink_rng, self.fps, interval_s=_pair(blink_interval_s), duration_s=blink_duration_s,
            first_s=_pair(first_blink_s),
        )
        self._breather = Breather(breath_rng, self.fps, rate_hz=_pair(breath_rate_hz))
        self._head_noise = [
            SmoothNoise(rng, components=head_components, freq_range_hz=_pair(head_freq_hz))
            for rng in (yaw_rng, pitch_rng, roll_rng)
        ]
        self._base, self._start_frame = base, int(start_frame)
        self._frame = 0
        self._peak_db = peak_floor_db
        self._open = 0.0
        self._width = 0.0
        self._activity = 0.0
        self._emphasis = 0.0

    @property
    def frames_emitted(self) -> int:
        return self._frame

    def from_audio(self, pcm: np.ndarray, sample_rate: int, phones: Sequence[Phone] = ()) -> MotionTrack:
        """Motion for every whole frame completed by this chunk; a partial frame waits for more audio.

        ``phones``: what the chunk says when (seconds from its first sample), where the TTS engine knows;
        this engine reads the audio alone and ignores them (the viseme engine shapes the mouth by them).
        """
        return self._animate(self._analyzer.push(pcm, sample_rate))

    def flush(self) -> MotionTrack:
        """The pending partial frame (padded with silence), or an empty track when there is none."""
        return self._animate(self._analyzer.flush())

    def idle(self, n_frames: int) -> MotionTrack:
        """``n_frames`` of silence: mouth settles closed, blinks/head/breath continue.

        Pending partial-frame audio stays pending; call ``flush()`` first to emit it.
        """
        if n_frames < 0:
            raise InputError(f"n_frames must be >= 0, got {n_frames}")
        return self._animate(self._analyzer.silence(n_frames))

    def settle(self, n_frames: int) -> MotionTrack:
        """``n_frames`` of silence that fade the mouth and every speech addition out, ending exactly on
        the idle motion (on the base loop's frame, with a ``base``)."""
        if n_frames < 0:
            raise InputError(f"n_frames must be >= 0, got {n_frames}")
        fade = np.linspace(1.0, 0.0, n_frames + 1)[1:]
        return self._animate(self._analyzer.silence(n_frames), fade)

    def _animate(self, features: FrameFeatures, fade: np.ndarray | None = None) -> MotionTrack:
        n = len(features)
        out = np.zeros((6, n), np.float64)  # mouth_open, mouth_width, blink, breath, activity, emphasis
        for i in range(n):
            out[:, i] = self._step(features, i)
        mouth_open, mouth_width, blink, breath, activity, emphasis = out
        if fade is not None:
            mouth_open, mouth_width, activity, emphasis = (v * fade for v in
                                                           (mouth_open, mouth_width, activity, emphasis))
        seconds = (self._frame + np.arange(n)) / self.fps
        base = self._base.track(self._start_frame + self._frame, n) if self._base is not None else None
        self._frame += n
        angles = []
        for axis, noise in enumerate(self._head_noise):
            if base is None:
                extra = self._head_speaking[axis] - self._head_idle[axis]
                amplitude = self._head_idle[axis] + extra * activity
            else:  # the loop carries the idle share; speech adds only its own
                amplitude = (self._head_speaking[axis] - self._head_idle[axis]) * activity
            angle = noise(seconds) * amplitude
            if axis == 1:  # emphasis dips the chin a little, as speakers do on stressed syllables
                angle = angle + self._nod_deg * emphasis
            limit = self._head_limit[axis]
            angle = limit * np.tanh(angle / limit)  # soft bound: stays smooth at the limit
            if base is not None:  # the loop's own angles are small: bound only what speech adds
                angle = angle + getattr(base, ("yaw", "pitch", "roll")[axis])
            angles.append(angle)
        yaw, pitch, roll = angles
        if base is not None:
            blink, breath = base.blink, base.breath
        return MotionTrack(
            self.fps, mouth_open=mouth_open, mouth_width=mouth_width, blink=blink,
            yaw=yaw, pitch=pitch, roll=roll, breath=breath,
        )

    def _new_analyzer(self, window_s: float) -> FrameAnalyzer:
        return FrameAnalyzer(self.fps, window_s=window_s)

    def _step(self, features: FrameFeatures, i: int) -> tuple[float, ...]:
        level_db = float(features.level_db[i])
        self._peak_db = max(level_db, self._peak_db - self._peak_decay_db, self._peak_floor_db)
        loudness = 0.0
        if level_db > self._gate_db:
            loudness = min(max((level_db - self._peak_db + self._range_db) / self._range_db, 0.0), 1.0)
        self._mouth_step(features, i, loudness)
        self._activity += self._activity_rate * (loudness - self._activity)
        self._emphasis += self._emphasis_rate * (self._open - self._emphasis)
        emphasis = max(0.0, self._emphasis - self._activity)
        return self._open, self._width, self._blinks.step(), self._breather.step(), self._activity, emphasis

    def _mouth_step(self, features: FrameFeatures, i: int, loudness: float) -> None:
        """Advance ``self._open`` / ``self._width`` by one frame (``loudness``: 0..1 within the running
        peak's range); a subclass replaces only this."""
        tilt_db, voicing = float(features.tilt_db[i]), float(features.voicing[i])
        target = self._open_gain * loudness**self._open_gamma
        target *= self._unvoiced_open + (1.0 - self._unvoiced_open) * voicing
        rate = self._attack if target > self._open else self._release
        self._open += rate * (target - self._open)

        width_target = float(np.tanh((tilt_db - self._tilt_center_db) / self._tilt_scale_db))
        width_target *= voicing * min(1.0, 2.0 * loudness)
        self._width += self._width_rate * (width_target - self._width)


def _pair(values: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    if high < low:
        raise InputError(f"range must be (low, high), got {tuple(values)}")
    return low, high
