"""Pitch: F0 contours (pYIN, librosa) and f0_rmse_hz, the pitch drift of a run against a baseline.

Both signals are tracked at 16 kHz with a 10 ms hop, 60-500 Hz. The two runs are DTW-aligned on their
MFCCs (what is said), not on F0 itself: aligning on F0 would pick the warp that hides pitch differences.
f0_rmse_hz is the RMS of the Hz differences along that path over frames voiced in both runs; None
when no frame pair is voiced in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.media.audio import resample

RATE = 16_000
HOP = 160  # 10 ms
FRAME = 1024  # pYIN needs >= 2 periods of the lowest F0 (60 Hz) per frame
F0_RANGE_HZ = (60.0, 500.0)


@dataclass(frozen=True)
class PitchTrack:
    f0: np.ndarray  # Hz per frame, NaN where unvoiced
    mfcc: np.ndarray  # [13, frames], the alignment features

    @property
    def mean_hz(self) -> float | None:
        voiced = self.f0[np.isfinite(self.f0)]
        return float(voiced.mean()) if voiced.size else None

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:  # np.savez would append ".npz" to a name lacking it
            np.savez(handle, f0=self.f0, mfcc=self.mfcc)

    @classmethod
    def load(cls, path: Path) -> PitchTrack:
        with np.load(path) as stored:
            return cls(stored["f0"], stored["mfcc"])


def pitch_track(pcm: np.ndarray, sample_rate: int) -> PitchTrack:
    import librosa

    audio = resample(pcm, sample_rate, RATE)
    f0, voiced, _ = librosa.pyin(audio, fmin=F0_RANGE_HZ[0], fmax=F0_RANGE_HZ[1], sr=RATE,
                                 frame_length=FRAME, hop_length=HOP)
    mfcc = librosa.feature.mfcc(y=audio, sr=RATE, n_mfcc=13, n_fft=FRAME, hop_length=HOP)
    n = min(len(f0), mfcc.shape[1])
    return PitchTrack(np.where(voiced[:n], f0[:n], np.nan).astype(np.float32), mfcc[:, :n].astype(np.float32))


def f0_rmse_hz(run: PitchTrack, baseline: PitchTrack) -> float | None:
    import librosa

    if not run.f0.size or not baseline.f0.size:
        return None
    _, path = librosa.sequence.dtw(X=run.mfcc, Y=baseline.mfcc, metric="cosine")
    a, b = run.f0[path[:, 0]], baseline.f0[path[:, 1]]
    both = np.isfinite(a) & np.isfinite(b)
    if not both.any():
        return None
    return float(np.sqrt(np.mean((a[both] - b[both]) ** 2)))


# --- F0 statistics: the output's pitch against the reference voice and against a golden run ---------

SOUND_DB = -35.0  # frames this far below the loudest one are silence: not counted in the voiced share
SEMITONE_REF_HZ = 100.0


@dataclass(frozen=True)
class F0Stats:
    median_st: float | None  # median voiced F0, semitones re 100 Hz
    range_st: float | None  # 5th-95th percentile span of voiced F0, semitones
    voiced_share: float  # voiced frames / frames with sound

    @property
    def median_hz(self) -> float | None:
        return None if self.median_st is None else SEMITONE_REF_HZ * 2 ** (self.median_st / 12)

    def to_dict(self) -> dict[str, float | None]:
        return {"median_st": self.median_st, "range_st": self.range_st, "voiced_share": self.voiced_share}

    @classmethod
    def from_dict(cls, values: dict[str, float | None]) -> F0Stats:
        return cls(values["median_st"], values["range_st"], float(values["voiced_share"] or 0.0))


def f0_stats(track: PitchTrack, pcm: np.ndarray, sample_rate: int) -> F0Stats:
    """Statistics of ``track`` (the pitch track of ``pcm``); sound frames from pcm's RMS on pYIN's grid."""
    import librosa

    rms = librosa.feature.rms(y=resample(pcm, sample_rate, RATE), frame_length=FRAME, hop_length=HOP)[0]
    n = min(len(rms), len(track.f0))
    rms, f0 = rms[:n], track.f0[:n]
    sound = rms > rms.max() * 10 ** (SOUND_DB / 20) if n else np.zeros(0, bool)
    voiced = np.isfinite(f0)
    share = float((voiced & sound).sum() / max(int(sound.sum()), 1))
    if not voiced.any():
        return F0Stats(None, None, share)
    st = 12 * np.log2(f0[voiced] / SEMITONE_REF_HZ)
    low, high = np.percentile(st, [5, 95])
    return F0Stats(float(np.median(st)), float(high - low), share)


def compare_stats(run: F0Stats, reference: F0Stats) -> dict[str, float | None]:
    """Signed differences run - reference: median and range in semitones, voiced share in 0..1 units."""
    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    return {"median_st": diff(run.median_st, reference.median_st),
            "range_st": diff(run.range_st, reference.range_st),
            "voiced_share": run.voiced_share - reference.voiced_share}
