"""Reference-voice handling shared by TTS engines: validation, content hash, pitch, the Voice record."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import soxr

from engines.errors import AudioTooShortError, InvalidAudioError

MIN_REFERENCE_SECONDS = 2.0
_PITCH_RATE = 16_000


@dataclass(frozen=True)
class Voice:
    """A prepared reference voice.

    ``conditioning`` is engine-specific: JSON values, plus numpy arrays for engines with latents
    (XTTS). ``to_dict`` is for JSON APIs (arrays become lists); ``to_bytes`` is the lossless form for
    caches (an .npz holding the arrays and a JSON header).
    """

    voice_id: str
    engine: str
    duration: float
    conditioning: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["conditioning"] = {
            k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in self.conditioning.items()
        }
        return data

    def to_bytes(self) -> bytes:
        arrays = {k: v for k, v in self.conditioning.items() if isinstance(v, np.ndarray)}
        header = {
            **asdict(self),
            "conditioning": {k: v for k, v in self.conditioning.items() if k not in arrays},
        }
        buffer = io.BytesIO()
        np.savez(buffer, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Voice:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            header = json.loads(npz["__header__"].tobytes())
            arrays = {k: npz[k] for k in npz.files if k != "__header__"}
        return cls.from_dict({**header, "conditioning": {**header["conditioning"], **arrays}})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Voice:
        return cls(
            voice_id=str(data["voice_id"]),
            engine=str(data["engine"]),
            duration=float(data["duration"]),
            conditioning=dict(data.get("conditioning", {})),
        )


def reference_audio(pcm: Any, sample_rate: int) -> np.ndarray:
    """Mono float32 in [-1, 1] from a reference clip, or InvalidAudioError / AudioTooShortError."""
    if not isinstance(sample_rate, int | np.integer) or sample_rate < 8_000:
        raise InvalidAudioError(f"sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}")
    if not isinstance(pcm, np.ndarray) or not np.issubdtype(pcm.dtype, np.number):
        raise InvalidAudioError("reference audio must be a numeric numpy array of samples")
    audio = pcm / float(np.iinfo(pcm.dtype).max) if np.issubdtype(pcm.dtype, np.integer) else pcm
    if audio.ndim == 2:
        # (samples, channels) or (channels, samples): the channel axis is the short one.
        audio = audio.mean(axis=1 if audio.shape[0] >= audio.shape[1] else 0)
    if audio.ndim != 1 or audio.size == 0:
        raise InvalidAudioError("reference audio must be a non-empty mono or (samples, channels) array")
    audio = audio.astype(np.float32)
    if not np.isfinite(audio).all():
        raise InvalidAudioError("reference audio holds NaN or infinite samples")
    if float(np.abs(audio).max()) < 1e-4:
        raise InvalidAudioError("reference audio is silent")
    seconds = audio.size / sample_rate
    if seconds < MIN_REFERENCE_SECONDS:
        raise AudioTooShortError(
            f"reference audio is {seconds:.2f} s; at least {MIN_REFERENCE_SECONDS:g} s is needed"
        )
    return np.clip(audio, -1.0, 1.0)


def content_hash(audio: np.ndarray, sample_rate: int) -> str:
    """sha256 of the normalised samples and their rate: the same clip always gets the same voice_id."""
    digest = hashlib.sha256(f"{sample_rate}:".encode())
    digest.update(np.ascontiguousarray(audio, dtype="<f4").tobytes())
    return digest.hexdigest()


def median_f0(audio: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 400.0) -> float | None:
    """Median F0 (Hz) over voiced frames, by normalised autocorrelation; None if nothing is voiced."""
    x = (
        audio
        if sample_rate == _PITCH_RATE
        else soxr.resample(audio.astype(np.float32), sample_rate, _PITCH_RATE)
    )
    frame, hop = int(0.04 * _PITCH_RATE), int(0.01 * _PITCH_RATE)
    if x.size < frame:
        return None
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sqrt((frames**2).mean(axis=1))
    frames = frames[energy > 0.1 * energy.max()]
    if not len(frames):
        return None
    spectrum = np.fft.rfft(frames * np.hanning(frame), n=2 * frame, axis=1)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :frame]
    acf /= np.maximum(acf[:, :1], 1e-12)
    lo, hi = int(_PITCH_RATE / fmax), int(_PITCH_RATE / fmin)
    lags = acf[:, lo:hi].argmax(axis=1) + lo
    voiced = acf[np.arange(len(lags)), lags] > 0.5
    if voiced.sum() < 5:
        return None
    return float(np.median(_PITCH_RATE / lags[voiced]))
