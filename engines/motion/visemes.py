"""Viseme-aware motion: the mouth takes the shape of the speech sounds, not only their loudness.

Per video frame, from the audio alone (what the realtime path and reference-voice TTS give):

- *jaw*: loudness, scaled up by the first formant (F1 rises as the jaw drops: "a" wider than "i"/"u",
  which still part the lips); voiceless frication and aspiration (s, sh, f, h) keep the lips apart
  however quiet it is (the air has to get out); a nasal murmur or voice bar (voiced, next to nothing
  above 400 Hz) holds the jaw at a consonant's height;
- *width*: the second formant (F2 high: spread "ee"; low: rounded "oo"/"o"), on voiced oral frames only,
  and held through consonants, nasal murmurs and short gaps (lips keep the neighbouring vowel's rounding:
  coarticulation);
- *closures*: a voiced frame whose oral-band share (above the voice bar and the nasal murmur, where vowels
  carry their energy) and level both drop well below those since the last pause, for at most a
  consonant's length, is a closed mouth: the murmur of "m" (its sound leaves through the nose) and the
  voice bar of "b". A front vowel heading into the murmur (F2 high: the alveolar/velar locus of "n",
  "ng") keeps the lips apart. A stop's silence closes the mouth only through the loudness, as a pause
  does (its silence says nothing of whether it was a "p" or a "t").

Where the TTS engine knows what it said when (the bundled Kokoro and Piper voices give their duration
predictors' alignment as ``AudioChunk.phones``), the words take over what the audio can only guess:

- *width* is each sound's lip shape (``engines.phones.VISEMES``: "oo" rounded, "ee" spread), consonants
  taking the next vowel's within ``coarticulation_s`` (lips round ahead of "oo"), else the last one's;
- *closures*: only near a p/b/m of the words may the audio's closure cue shut the lips (none on an "ee"
  or a "t"), and every p/b/m shuts them at least once, on the frame near it whose oral band is quietest
  (the model's timing can be a frame out, the sound is not);
- the *jaw* stays the audio's (loudness and F1): scaling it by each sound's opening measured worse.

Formants come from linear prediction on each frame's own power spectrum (band-limited to the formant
range, smoothed over about a voice's F0), so they cost one small polynomial root per frame. Jaw and width
each follow their targets through a critically damped second-order follower (smooth, no overshoot, no
chattering); a closure takes the jaw down within the frame and holds it for a minimum dwell.

Everything else (blinks, head motion, breathing, the idle-loop base, chunking) is ``MotionGenerator``'s;
this class replaces only its mouth step, so it is a drop-in ``motion`` engine ("visemes").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.linalg import solve_toeplitz

from engines.motion.features import FrameAnalyzer, FrameFeatures
from engines.motion.generator import MotionGenerator
from engines.motion.track import MotionTrack
from engines.phones import VISEMES, Phone

# The analysis window is the whole frame (at 25 fps, 40 ms): long enough for formants, short enough not
# to smear a 60 ms closure into the vowels around it (the loudness engine's 64 ms does).
VISEME_WINDOW_S = 0.04
ORAL_BAND = (400.0, 4000.0)  # above the voice bar of "b" and the murmur of "m"; F1 and F2 of vowels
FORMANT_BAND_HZ = 5000.0  # linear prediction sees the spectrum up to here (F1-F3 of adult voices)
LPC_ORDER = 10  # two poles per formant in 5 kHz, plus two for the source and radiation slope
PRE_EMPHASIS = 0.97  # flattens the voice's spectral tilt so the higher formants get their own poles
MAX_BANDWIDTH_HZ = 500.0  # wider resonances are not formants
MIN_FORMANT_HZ = 180.0
LAG_WINDOW_HZ = 100.0  # spectral smoothing for the prediction, about a high voice's F0
_EPS = 1e-12


@dataclass(frozen=True)
class VisemeFeatures(FrameFeatures):
    """``FrameFeatures`` plus the cues of the mouth's shape."""

    f1_hz: np.ndarray  # first formant (NaN: none found)
    f2_hz: np.ndarray  # second formant (NaN: none found)
    oral_db: np.ndarray  # ORAL_BAND power over the speech-band power, dB (~0 on vowels, -10 or less on m/b)
    # From the TTS engine's phones, where it gave them:
    phone_width: np.ndarray  # the frame's sounds' lip width, weighted by their share of the frame,
    # consonants taking their vowel's (coarticulation); NaN: no phone in the frame

    phone_closed: np.ndarray  # 1 where a p/b/m fills the frame (or most of itself lies in it), else 0
    phone_labial_near: np.ndarray  # 1 where a p/b/m lies within ``labial_reach_s`` of the frame, else 0


@dataclass(frozen=True)
class _TimedViseme:
    start: int  # samples, on the analyzer's stream clock
    end: int
    width: float
    closed: bool


class VisemeAnalyzer(FrameAnalyzer):
    """``FrameAnalyzer`` that also measures the first two formants and the oral band's share, and lays
    the phones a chunk comes with onto the frames they fall in."""

    def __init__(self, *args: Any, coarticulation_s: float = 0.15, labial_reach_s: float = 0.06,
                 closure_slack_s: float = 0.02, **kwargs: Any) -> None:
        self._coarticulation_s = coarticulation_s
        self._labial_reach_s = labial_reach_s
        self._closure_slack_s = closure_slack_s
        self._visemes: list[_TimedViseme] = []
        super().__init__(*args, **kwargs)

    def push(self, pcm: np.ndarray, sample_rate: int, phones: Sequence[Phone] = ()) -> VisemeFeatures:
        """``FrameAnalyzer.push``; ``phones`` (seconds from this chunk's first sample) shape the frames."""
        self._start(sample_rate)
        if phones:
            self._visemes += self._timed(phones, self._origin + self._data.size, sample_rate)
        features = super().push(pcm, sample_rate)
        assert isinstance(features, VisemeFeatures)
        return features

    def flush(self) -> VisemeFeatures:
        """``FrameAnalyzer.flush``; phones still ahead move onto the restarted frame alignment."""
        restart = self._boundary(self._frames + 1) if self.pending_samples > 0 else 0
        features = super().flush()
        if restart:
            self._visemes = [replace(v, start=v.start - restart, end=v.end - restart)
                             for v in self._visemes if v.end > restart]
        assert isinstance(features, VisemeFeatures)
        return features

    def _timed(self, phones: Sequence[Phone], origin: int, sample_rate: int) -> list[_TimedViseme]:
        """Each phone's viseme on the stream clock. A consonant without a lip shape of its own takes the
        next vowel's if it comes within ``coarticulation_s`` (lips round ahead of "oo"), else the last's."""
        known = [(p, VISEMES[p.symbol]) for p in phones if p.symbol in VISEMES and p.end_s > p.start_s]
        timed = []
        for index, (phone, viseme) in enumerate(known):
            width = viseme.width
            if width is None:
                ahead = next((v.width for p, v in known[index + 1:] if v.width is not None
                              and p.start_s - phone.end_s <= self._coarticulation_s), None)
                behind = next((v.width for p, v in reversed(known[:index]) if v.width is not None
                               and phone.start_s - p.end_s <= self._coarticulation_s), None)
                width = ahead if ahead is not None else behind if behind is not None else 0.0
            timed.append(_TimedViseme(origin + round(phone.start_s * sample_rate),
                                      origin + round(phone.end_s * sample_rate),
                                      width, viseme.closed))
        return timed

    def _phone_frames(self, oral_level_db: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per emitted frame: the width of the phones in it (weighted by their share of the frame),
        whether a p/b/m shuts it, and whether one is near (within ``labial_reach_s``). A p/b/m shuts the
        frame whose oral band is quietest among those it overlaps (give or take ``closure_slack_s``): the
        model's timing can be a frame out, the sound's quiet moment is not."""
        count = oral_level_db.size
        width = np.full(count, np.nan, np.float32)
        closed = np.zeros(count, np.float32)
        near = np.zeros(count, np.float32)
        if not self._visemes:
            return width, closed, near
        assert self.sample_rate is not None
        reach = round(self._labial_reach_s * self.sample_rate)
        slack = round(self._closure_slack_s * self.sample_rate)
        bounds = np.array([self._boundary(self._frames + k) for k in range(count + 1)])
        starts, ends = bounds[:-1], bounds[1:]
        weight = np.zeros(count)
        lips = np.zeros(count)
        for viseme in self._visemes:
            overlap = np.clip(np.minimum(ends, viseme.end) - np.maximum(starts, viseme.start), 0, None)
            weight += overlap
            lips += overlap * viseme.width
            if viseme.closed:
                near[(starts < viseme.end + reach) & (ends > viseme.start - reach)] = 1.0
                candidates = np.flatnonzero((starts < viseme.end + slack) & (ends > viseme.start - slack))
                if candidates.size:
                    closed[candidates[np.argmin(oral_level_db[candidates])]] = 1.0
        spoken = weight > 0
        width[spoken] = lips[spoken] / weight[spoken]
        # Kept a little past their end: a later frame may still be near a labial.
        self._visemes = [v for v in self._visemes if v.end + reach > ends[-1]]
        return width, closed, near

    def _start(self, sample_rate: int) -> None:
        changed = self.sample_rate != sample_rate
        super()._start(sample_rate)
        if changed:
            self._visemes = []
            freqs = np.fft.rfftfreq(self._n_fft, 1.0 / sample_rate)
            self._oral = (freqs >= ORAL_BAND[0]) & (freqs < ORAL_BAND[1])
            self._formant_bins = int(np.searchsorted(freqs, min(FORMANT_BAND_HZ, sample_rate / 2)))
            self._formant_rate = 2.0 * freqs[self._formant_bins - 1]  # sample rate of the band-limited signal
            omega = np.pi * freqs[: self._formant_bins] / freqs[self._formant_bins - 1]
            self._emphasis = np.abs(1.0 - PRE_EMPHASIS * np.exp(-1j * omega)) ** 2
            # A Gaussian lag window smooths the spectrum over LAG_WINDOW_HZ: the harmonics of a high voice
            # then no longer pull poles onto themselves.
            lag = 2 * np.pi * LAG_WINDOW_HZ * np.arange(LPC_ORDER + 1) / self._formant_rate
            self._lag_window = np.exp(-0.5 * lag**2)

    def silence(self, n_frames: int) -> VisemeFeatures:
        base = super().silence(n_frames)
        missing = np.full(n_frames, np.nan, np.float32)
        zeros = np.zeros(n_frames, np.float32)
        return VisemeFeatures(base.level_db, base.tilt_db, base.voicing, f1_hz=missing, f2_hz=missing,
                              oral_db=zeros, phone_width=missing, phone_closed=zeros,
                              phone_labial_near=zeros)

    def _features(self, windows: np.ndarray, power: np.ndarray) -> VisemeFeatures:
        base = super()._features(windows, power)
        oral_db = 10 * np.log10(power[:, self._oral].sum(axis=1) + _EPS) - base.level_db
        f1, f2 = self._formants(power)
        phone_width, phone_closed, labial_near = self._phone_frames(oral_db + base.level_db)
        return VisemeFeatures(base.level_db, base.tilt_db, base.voicing, f1_hz=f1, f2_hz=f2,
                              oral_db=oral_db.astype(np.float32),
                              phone_width=phone_width, phone_closed=phone_closed,
                              phone_labial_near=labial_near)

    def _formants(self, power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F1, F2 per frame by linear prediction on the pre-emphasised, band-limited power spectrum (its
        inverse FFT is the autocorrelation of the band's signal)."""
        band = power[:, : self._formant_bins] * self._emphasis
        autocorrelation = np.fft.irfft(band, axis=1)[:, : LPC_ORDER + 1]
        f1 = np.full(len(power), np.nan, np.float32)
        f2 = np.full(len(power), np.nan, np.float32)
        for i, r in enumerate(autocorrelation):
            if r[0] <= _EPS:
                continue
            r = r * self._lag_window
            r[0] *= 1.0 + 1e-6
            coefficients = solve_toeplitz(r[:-1], r[1:])
            roots = np.roots(np.concatenate([[1.0], -coefficients]))
            roots = roots[roots.imag > 0]
            freqs = np.angle(roots) * self._formant_rate / (2 * np.pi)
            bandwidths = -np.log(np.abs(roots) + _EPS) * self._formant_rate / np.pi
            found = np.sort(freqs[(bandwidths < MAX_BANDWIDTH_HZ) & (freqs > MIN_FORMANT_HZ)])
            if found.size >= 2:
                f1[i], f2[i] = found[0], found[1]
        return f1, f2


class VisemeMotionGenerator(MotionGenerator):
    """``MotionGenerator`` whose mouth follows formants and closures (see the module docstring).

    Every ``MotionGenerator`` option applies (blinks, head, breath, ``base``/``start_frame``); the mouth's
    own options are below. Frequencies are for an adult voice; the F2 centre sits between a typical
    "oo" and "ee".
    """

    def __init__(
        self,
        *args: Any,
        window_s: float = VISEME_WINDOW_S,
        f1_closed_hz: float = 300.0,
        f1_open_hz: float = 750.0,
        # Close vowels part the lips too: F1 adds up to 30% on open vowels instead of taking 40% off close
        # ones (0.6-1.2 before: every i/u of a high voice, F1 ~300 Hz, was drawn barely more open than
        # the consonants around it).
        jaw_range: tuple[float, float] = (1.0, 1.3),
        f2_center_hz: float = 1800.0,
        f2_scale_hz: float = 350.0,
        # A lip closure: the oral band's share falls (closure_drop_db) and the level falls
        # (nasal_dip_db), by closure_total_db together (Piper's "ama" 13 + 12 dB, "abba" 6 + 19, "mama"
        # 9 + 11; an "ee" after an "a" in a high voice: a share drop of 10-20 dB at an equal level), after
        # a vowel whose F2 was under labial_f2_hz (the vowel's lips heading for a labial, not an "n").
        closure_drop_db: tuple[float, float] = (2.0, 4.0),
        nasal_dip_db: tuple[float, float] = (4.0, 6.0),
        closure_total_db: tuple[float, float] = (12.0, 18.0),
        labial_f2_hz: tuple[float, float] | None = (1800.0, 2400.0),
        # A level dip alone as a closure (the old rule, 8-14 dB): off, since a stop's silence is a "t" or
        # "k" as often as a "p", and shutting the lips on all of them made the mouth blink shut mid-word.
        closure_dip_db: tuple[float, float] | None = None,
        closure_memory_s: float = 0.16,
        closure_dwell_s: float = 0.04,
        closure_max_s: float = 0.04,
        jaw_response_s: float = 0.02,
        width_response_s: float = 0.025,
        width_hold_s: float = 0.2,
        width_oral_min_db: float = -15.0,
        fricative_open: float = 0.3,  # about a consonant's opening (a vowel's is ~0.6-0.8)
        # A voiced frame with (almost) nothing above 400 Hz, its oral share 22-30 dB down, is a nasal
        # murmur or a voice bar (n, ng, m, d, g, b): the jaw is up for those, so the mouth goes to a
        # consonant's opening however loud the murmur is (vowels, even a high voice's "ee", keep F2
        # energy within ~20 dB).
        murmur_db: tuple[float, float] | None = (22.0, 30.0),
        balance_share: float = 0.0,
        voiced_share: float = 0.5,
        # With phones, away from a p/b/m the audio's closure cue may take at most this share of the jaw: it
        # raises the jaw (an "n", a syllable's end) but never shuts the lips (that takes a full closure).
        # 0 (no cue at all away from labials), 0.8 and 0.95 gave ZH_short 0.699 / 0.710 / 0.737 and a
        # six-sentence mean of 0.630 / 0.641 / 0.642 (female voice).
        unlabial_closure: float = 0.95,
        coarticulation_s: float = 0.15,
        **kwargs: Any,
    ) -> None:
        self._coarticulation_s = coarticulation_s  # the analyzer (made by super().__init__) needs it
        super().__init__(*args, window_s=window_s, **kwargs)
        self._unlabial_closure = unlabial_closure
        self._f1_range = (f1_closed_hz, f1_open_hz)
        self._jaw_range = jaw_range
        self._f2_center, self._f2_scale = f2_center_hz, f2_scale_hz
        self._closure_drop, self._nasal_dip, self._closure_dip = closure_drop_db, nasal_dip_db, closure_dip_db
        self._closure_total = closure_total_db
        self._labial_f2 = labial_f2_hz
        self._recent_level: list[float] = []  # speech-band level of the last few frames (since the pause)
        self._recent_oral: list[float] = []  # oral-band share of the last few voiced frames (since the pause)
        self._last_vowel_f2 = math.nan  # F2 of the last vowel frame: where the lips were heading
        self._memory_frames = max(1, round(closure_memory_s * self.fps))
        self._dwell_frames = max(1, round(closure_dwell_s * self.fps))
        self._max_closure_frames = max(1, round(closure_max_s * self.fps))
        self._closure_run = 0
        self._jaw_omega = 1.0 / max(jaw_response_s, 1e-3)
        self._width_omega = 1.0 / max(width_response_s, 1e-3)
        self._hold_frames = round(width_hold_s * self.fps)
        self._width_oral_min = width_oral_min_db
        self._fricative_open = fricative_open
        self._murmur = murmur_db
        self._balance_share = balance_share
        self._voiced_share = voiced_share
        self._open_velocity = 0.0
        self._width_velocity = 0.0
        self._width_goal = 0.0
        self._since_voiced = self._hold_frames
        self._closed_for = self._dwell_frames

    def from_audio(self, pcm: np.ndarray, sample_rate: int, phones: Sequence[Phone] = ()) -> MotionTrack:
        """Motion for the frames this chunk completes; with ``phones`` (the TTS engine's own timing) the
        lips take each sound's shape and close on its p/b/m, and the audio still gives the jaw and when
        exactly the lips meet."""
        assert isinstance(self._analyzer, VisemeAnalyzer)
        return self._animate(self._analyzer.push(pcm, sample_rate, phones))

    def _new_analyzer(self, window_s: float) -> FrameAnalyzer:
        return VisemeAnalyzer(self.fps, window_s=window_s, coarticulation_s=self._coarticulation_s)

    def _closure(self, level_db: float, voicing: float, oral_db: float) -> float:
        """0..1: how surely this frame is a lip closure (m, b): the voice on, and both the oral band's
        share and the level fallen well below what they were since the last pause. Shut lips block the
        mouth, so the voice goes on weaker (through the nose on "m", into the closed cavity on "b") with
        the vowel formants gone: a close vowel changes the share but not the level (in a high voice an
        "ee" has as little above 400 Hz as an "m"), a weaker syllable the level but not the share, and a
        word's first "m" after a pause has nothing to fall from. A vowel heading for a high F2 (front
        vowel into "n", "ng": the alveolar/velar locus) makes the same murmur with the lips apart; the
        labial locus pulls F2 down. Never longer than a consonant lasts."""
        recent_oral = max(self._recent_oral, default=oral_db)
        recent_level = max(self._recent_level, default=level_db)
        voiced = voicing >= self._voiced_share
        self._recent_oral = [*self._recent_oral, oral_db if voiced else -math.inf][-self._memory_frames:]
        self._recent_level = [*self._recent_level, level_db][-self._memory_frames:]
        closure = 0.0
        if self._closure_dip is not None:  # a stop's silence (p, but just as often t, k: off by default)
            closure = _ramp(recent_level - level_db, self._closure_dip)
        if voiced:
            drop, dip = recent_oral - oral_db, recent_level - level_db
            labial = _ramp(drop, self._closure_drop) * _ramp(dip, self._nasal_dip)
            labial *= _ramp(drop + dip, self._closure_total)  # the oral band's own fall, in all
            if self._labial_f2 is not None and not math.isnan(self._last_vowel_f2):
                labial *= 1.0 - _ramp(self._last_vowel_f2, self._labial_f2)
            closure = max(closure, labial)
        self._closure_run = self._closure_run + 1 if closure > 0.0 else 0
        if self._closure_run > self._max_closure_frames:
            # Longer than a consonant: a close vowel after all; it becomes the reference.
            self._recent_oral, self._recent_level, self._closure_run, closure = [oral_db], [level_db], 0, 0.0
        return closure

    def _mouth_step(self, features: FrameFeatures, i: int, loudness: float) -> None:
        assert isinstance(features, VisemeFeatures)
        voicing, oral_db = float(features.voicing[i]), float(features.oral_db[i])
        f1, f2 = float(features.f1_hz[i]), float(features.f2_hz[i])
        speaking = loudness > 0.0
        # Where the TTS said which sound it made, its phones decide the closures and the lips' shape; the
        # audio still decides how far the jaw drops.
        timed = not math.isnan(float(features.phone_width[i]))
        closure = self._closure(float(features.level_db[i]), voicing, oral_db) if speaking else 0.0
        if timed and features.phone_labial_near[i] < 1.0:
            # The words decide whether a closure is a p/b/m at all: away from one the cue (an "n", the end
            # of a syllable) raises the jaw only part way and the lips stay apart.
            closure = min(closure, self._unlabial_closure)
        # ... and each p/b/m they have shuts the lips at least once.
        closure = max(closure, float(features.phone_closed[i]))
        if not speaking:  # a pause: the next closure is judged against the next syllable, not this one
            self._recent_oral, self._recent_level, self._last_vowel_f2 = [], [], math.nan
        vowel = speaking and closure == 0.0 and voicing >= self._voiced_share and not math.isnan(f1)

        # Jaw: loudness (as the loudness engine), times how open the vowel is (F1), shut on a closure.
        low, high = self._f1_range
        openness = min(max((f1 - low) / (high - low), 0.0), 1.0) if vowel else 0.0
        jaw = self._jaw_range[0] + (self._jaw_range[1] - self._jaw_range[0]) * openness
        target = min(self._open_gain * loudness**self._open_gamma * jaw * (1.0 - closure), 1.0)
        target *= self._unvoiced_open + (1.0 - self._unvoiced_open) * voicing
        if speaking and voicing < self._voiced_share and closure == 0.0:
            # Frication and aspiration (s, sh, f, h) need the air to get out: the lips stay apart (the
            # teeth nearly meet on s, h takes the next vowel's opening), however quiet the noise is.
            target = max(target, self._fricative_open)
        if self._murmur is not None and voicing >= self._voiced_share:
            murmur = _ramp(-oral_db, self._murmur)
            target = (1.0 - murmur) * target + murmur * min(target, self._fricative_open)
        if closure >= 1.0:
            self._closed_for = 0
        if self._closed_for < self._dwell_frames:
            self._closed_for += 1
            self._open, self._open_velocity = 0.0, 0.0  # the lips meet within the frame, and stay a moment
        else:
            self._open, self._open_velocity = _follow(self._open, self._open_velocity, target,
                                                      self._jaw_omega, 1.0 / self.fps)
            self._open = min(max(self._open, 0.0), 1.0)

        # Width: F2 on vowels (low F2 rounds only a close or mid vowel: an open "a" has a low F2 too);
        # consonants and short gaps keep the vowel's shape, pauses relax it. Nasal murmurs and voice bars
        # (little above 400 Hz) are skipped too: their resonances are the nose's, not the vowel's (LPC
        # read F2 ~2300 Hz on the "m" and "n" of "moon" and spread the lips there).
        if timed:
            self._width_goal = float(features.phone_width[i]) * min(1.0, 2.0 * loudness)
            self._since_voiced = 0
        elif vowel and not math.isnan(f2) and oral_db > self._width_oral_min:
            goal = math.tanh((f2 - self._f2_center) / self._f2_scale)
            if goal < 0.0:
                goal *= 1.0 - openness
            # Blended with the spectral balance (F2 region over F1 region), which LPC cannot get wrong.
            balance = math.tanh((float(features.tilt_db[i]) - self._tilt_center_db) / self._tilt_scale_db)
            goal = (1.0 - self._balance_share) * goal + self._balance_share * balance
            self._width_goal = goal * min(1.0, 2.0 * loudness)
            self._last_vowel_f2 = f2
            self._since_voiced = 0
        elif self._since_voiced < self._hold_frames:
            self._since_voiced += 1
        else:
            self._width_goal = 0.0
        self._width, self._width_velocity = _follow(self._width, self._width_velocity, self._width_goal,
                                                    self._width_omega, 1.0 / self.fps)
        self._width = min(max(self._width, -1.0), 1.0)


def _ramp(value: float, span: tuple[float, float]) -> float:
    """0 at ``span[0]`` .. 1 at ``span[1]``, clipped."""
    return min(max((value - span[0]) / (span[1] - span[0]), 0.0), 1.0)


def _follow(value: float, velocity: float, target: float, omega: float, dt: float) -> tuple[float, float]:
    """One exact step of a critically damped spring towards ``target`` (natural frequency ``omega``)."""
    error = value - target
    decay = math.exp(-omega * dt)
    drift = velocity + omega * error
    return target + (error + drift * dt) * decay, (velocity - omega * drift * dt) * decay
