"""Streaming audio analysis: cut samples into video frames and measure each frame's speech cues."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.errors import InputError, InvalidAudioError

DEFAULT_WINDOW_S = 0.064
DEFAULT_SPEECH_BAND = (100.0, 4000.0)
DEFAULT_LOW_BAND = (200.0, 1200.0)  # first-formant region: carries the vowel energy
DEFAULT_HIGH_BAND = (1200.0, 3500.0)  # second-formant region: high for spread vowels ("ee")
DEFAULT_VOICED_BAND = (100.0, 1000.0)
_FULL_BAND_HZ = 8000.0
_EPS = 1e-12
SILENCE_DB = -120.0  # the level given to frames of no audio at all


@dataclass(frozen=True)
class FrameFeatures:
    """Per-frame cues, one value per video frame."""

    level_db: np.ndarray  # speech-band power, dB re full scale
    tilt_db: np.ndarray  # high-band over low-band power, dB
    voicing: np.ndarray  # share of the power below 1 kHz: ~1 for vowels, ~0 for fricatives/silence

    def __len__(self) -> int:
        return int(self.level_db.size)


def as_mono_float(pcm: np.ndarray) -> np.ndarray:
    """float32 mono in [-1, 1] from float or integer PCM, mono or ``[samples, channels]``."""
    pcm = np.asarray(pcm)
    if pcm.ndim == 2:
        pcm = pcm.mean(axis=1)
    if pcm.ndim != 1:
        raise InvalidAudioError(f"expected mono PCM or [samples, channels], got shape {pcm.shape}")
    if np.issubdtype(pcm.dtype, np.integer):
        pcm = pcm.astype(np.float32) / float(np.iinfo(pcm.dtype).max + 1)
    pcm = pcm.astype(np.float32, copy=False)
    if not np.isfinite(pcm).all():
        raise InvalidAudioError("audio holds non-finite samples")
    return pcm


class FrameAnalyzer:
    """Frames a sample stream at ``fps`` and analyses each frame, carrying leftovers between calls.

    Frame ``i`` covers samples ``[round(i*sr/fps), round((i+1)*sr/fps))`` of the stream; its analysis
    window is the ``window_s`` of audio ending at the frame's end (causal: no frame waits for the next
    chunk), so chunked and one-shot calls give identical features.
    """

    def __init__(
        self,
        fps: float,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        speech_band: tuple[float, float] = DEFAULT_SPEECH_BAND,
        low_band: tuple[float, float] = DEFAULT_LOW_BAND,
        high_band: tuple[float, float] = DEFAULT_HIGH_BAND,
        voiced_band: tuple[float, float] = DEFAULT_VOICED_BAND,
    ) -> None:
        self.fps = fps
        self.window_s = window_s
        self._bands = {"speech": speech_band, "low": low_band, "high": high_band, "voiced": voiced_band}
        self.sample_rate: int | None = None
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._frames = 0  # frames emitted since the alignment origin
        self._origin = 0  # absolute index (since the alignment origin) of self._data[0]
        self._data = np.zeros(0, np.float32)

    @property
    def pending_samples(self) -> int:
        """Samples received that do not yet fill a whole frame."""
        if self.sample_rate is None:
            return 0
        return self._origin + self._data.size - self._boundary(self._frames)

    def _boundary(self, frame: int) -> int:
        assert self.sample_rate is not None
        return round(frame * self.sample_rate / self.fps)

    def _start(self, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise InputError(f"sample rate must be positive, got {sample_rate}")
        if self.sample_rate != sample_rate:
            if self.pending_samples:
                raise InputError("the sample rate changed mid-frame; call flush() before switching rates")
            self.sample_rate = sample_rate
            self._window = max(round(self.window_s * sample_rate), self._boundary(1))
            self._n_fft = 1 << (self._window - 1).bit_length()
            self._taper = np.hanning(self._window).astype(np.float32)
            freqs = np.fft.rfftfreq(self._n_fft, 1.0 / sample_rate)
            self._masks = {name: (freqs >= lo) & (freqs < hi) for name, (lo, hi) in self._bands.items()}
            self._masks["full"] = (freqs >= self._bands["speech"][0]) & (freqs < _FULL_BAND_HZ)
            # Scale so a band's value is its mean power (a full-scale sine reads about -3 dB).
            self._power_scale = 2.0 / (self._n_fft * float(np.sum(self._taper**2)))
            self._reset_stream()
            self._data = np.zeros(self._window, np.float32)
            self._origin = -self._window

    def silence(self, n_frames: int) -> FrameFeatures:
        """Features of ``n_frames`` of digital silence (idle frames, no audio analysed)."""
        zeros = np.zeros(n_frames, np.float32)
        return FrameFeatures(level_db=np.full(n_frames, SILENCE_DB, np.float32), tilt_db=zeros, voicing=zeros)

    def push(self, pcm: np.ndarray, sample_rate: int) -> FrameFeatures:
        """Append samples; return features for every frame they complete."""
        self._start(sample_rate)
        self._data = np.concatenate([self._data, as_mono_float(pcm)])
        end = self._origin + self._data.size
        count = 0
        while self._boundary(self._frames + count + 1) <= end:
            count += 1
        return self._emit(count)

    def flush(self) -> FrameFeatures:
        """Pad the pending partial frame with silence and analyse it; restart frame alignment after it."""
        pending = self.pending_samples
        if pending <= 0:
            return self._emit(0)
        missing = self._boundary(self._frames + 1) - (self._origin + self._data.size)
        self._data = np.concatenate([self._data, np.zeros(missing, np.float32)])
        history = self._data[-self._window :]  # the next frame's window starts where this one ends
        features = self._emit(1)
        self._reset_stream()
        self._data, self._origin = history, -self._window
        return features

    def _emit(self, count: int) -> FrameFeatures:
        if count == 0:
            return self.silence(0)
        ends = np.array([self._boundary(self._frames + k) for k in range(1, count + 1)]) - self._origin
        index = ends[:, None] - self._window + np.arange(self._window)[None, :]
        windows = self._data[index]
        spectra = np.fft.rfft(windows * self._taper, n=self._n_fft, axis=1)
        power = (spectra.real**2 + spectra.imag**2) * self._power_scale
        features = self._features(windows, power)
        self._frames += count
        keep_from = self._boundary(self._frames + 1) - self._window - self._origin
        self._data = self._data[max(keep_from, 0) :]
        self._origin += max(keep_from, 0)
        return features

    def _features(self, windows: np.ndarray, power: np.ndarray) -> FrameFeatures:
        """Per-frame cues from each frame's samples ``[frames, window]`` and power spectrum (a subclass
        measures more cues from the same analysis)."""
        band = {name: power[:, mask].sum(axis=1) + _EPS for name, mask in self._masks.items()}
        return FrameFeatures(
            level_db=(10 * np.log10(band["speech"])).astype(np.float32),
            tilt_db=(10 * np.log10(band["high"] / band["low"])).astype(np.float32),
            voicing=np.clip(band["voiced"] / band["full"], 0.0, 1.0).astype(np.float32),
        )
