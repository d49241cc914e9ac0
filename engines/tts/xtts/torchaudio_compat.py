"""A stand-in for the two torchaudio pieces XTTS inference uses, for machines without a usable torchaudio.

coqui-tts imports ``torchaudio`` at module level (and ``TTS/__init__`` checks that it is installed),
but XTTS inference only calls ``transforms.MelSpectrogram`` (cloning mel, speaker-encoder front end)
and ``functional.resample``. On the CPU machines torchaudio has no wheel matching torch 2.13 (PyPI's
only build links CUDA libraries), so :func:`ensure_torchaudio` registers this module's pure-torch
ports of those pieces under the name ``torchaudio`` -- only when a real torchaudio cannot be imported.
A GPU image with a matching torch/torchaudio pair uses the real package.

The code below follows torchaudio 2.11 (BSD-2-Clause, Copyright (c) 2017 Facebook Inc.) line for line
in its arithmetic, and keeps its submodule and buffer names (``spectrogram.window``,
``mel_scale.fb``) because the speaker encoder's MelSpectrogram buffers are part of XTTS's state dict.
"""

from __future__ import annotations

import importlib.machinery
import math
import sys
import types
from collections.abc import Callable

import torch
from torch import Tensor


def _hz_to_mel(freq: float, mel_scale: str) -> float:
    if mel_scale == "htk":
        return 2595.0 * math.log10(1.0 + freq / 700.0)
    f_sp = 200.0 / 3
    mels = freq / f_sp
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    if freq >= min_log_hz:
        mels = min_log_hz / f_sp + math.log(freq / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: Tensor, mel_scale: str) -> Tensor:
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * torch.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


def melscale_fbanks(
    n_freqs: int,
    f_min: float,
    f_max: float,
    n_mels: int,
    sample_rate: int,
    norm: str | None = None,
    mel_scale: str = "htk",
) -> Tensor:
    """Triangular mel filter bank (n_freqs, n_mels), as ``torchaudio.functional.melscale_fbanks``."""
    if norm not in (None, "slaney") or mel_scale not in ("htk", "slaney"):
        raise ValueError(f"unsupported mel filter bank norm={norm!r} mel_scale={mel_scale!r}")
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(_hz_to_mel(f_min, mel_scale), _hz_to_mel(f_max, mel_scale), n_mels + 2)
    f_pts = _mel_to_hz(m_pts, mel_scale)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up_slopes = slopes[:, 2:] / f_diff[1:]
    fb = torch.max(torch.zeros(1), torch.min(down_slopes, up_slopes))
    if norm == "slaney":
        fb *= (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)
    return fb


def resample(
    waveform: Tensor,
    orig_freq: int,
    new_freq: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> Tensor:
    """Band-limited (Hann-windowed sinc) resampling, as ``torchaudio.functional.resample``'s default."""
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError("sample rates must be positive")
    if orig_freq == new_freq:
        return waveform
    if not waveform.is_floating_point():
        raise TypeError(f"expected a floating point waveform, got {waveform.dtype}")
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    idx = torch.arange(-width, width + orig, dtype=waveform.dtype, device=waveform.device)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=waveform.dtype, device=waveform.device)[:, None, None] / new + idx
    t = (t * base_freq).clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t *= math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernel *= window * (base_freq / orig)

    shape = waveform.size()
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[..., : math.ceil(new * length / orig)]
    return out.reshape(shape[:-1] + out.shape[-1:])


class Spectrogram(torch.nn.Module):
    def __init__(
        self,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        window_fn: Callable[..., Tensor] = torch.hann_window,
        power: float = 2.0,
        normalized: bool = False,
        center: bool = True,
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.register_buffer("window", window_fn(self.win_length))
        self.power = power
        self.normalized = normalized
        self.center = center
        self.pad_mode = pad_mode

    def forward(self, waveform: Tensor) -> Tensor:
        shape = waveform.size()
        spec = torch.stft(
            waveform.reshape(-1, shape[-1]),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=self.center,
            pad_mode=self.pad_mode,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        spec = spec.reshape(shape[:-1] + spec.shape[-2:])
        if self.normalized:
            spec = spec / self.window.pow(2.0).sum().sqrt()
        return spec.abs() if self.power == 1.0 else spec.abs().pow(self.power)


class MelScale(torch.nn.Module):
    def __init__(
        self,
        n_mels: int = 128,
        sample_rate: int = 16000,
        f_min: float = 0.0,
        f_max: float | None = None,
        n_stft: int = 201,
        norm: str | None = None,
        mel_scale: str = "htk",
    ) -> None:
        super().__init__()
        f_max = f_max if f_max is not None else float(sample_rate // 2)
        fb = melscale_fbanks(n_stft, f_min, f_max, n_mels, sample_rate, norm, mel_scale)
        self.register_buffer("fb", fb)

    def forward(self, specgram: Tensor) -> Tensor:
        return torch.matmul(specgram.transpose(-1, -2), self.fb).transpose(-1, -2)


class MelSpectrogram(torch.nn.Module):
    """``torchaudio.transforms.MelSpectrogram`` for the arguments coqui passes (no pad, no wkwargs)."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        n_mels: int = 128,
        window_fn: Callable[..., Tensor] = torch.hann_window,
        power: float = 2.0,
        normalized: bool = False,
        center: bool = True,
        pad_mode: str = "reflect",
        norm: str | None = None,
        mel_scale: str = "htk",
    ) -> None:
        super().__init__()
        self.spectrogram = Spectrogram(
            n_fft, win_length, hop_length, window_fn, power, normalized, center, pad_mode
        )
        self.mel_scale = MelScale(n_mels, sample_rate, f_min, f_max, n_fft // 2 + 1, norm, mel_scale)

    def forward(self, waveform: Tensor) -> Tensor:
        return self.mel_scale(self.spectrogram(waveform))


def _load(*_: object, **__: object) -> None:
    raise RuntimeError("torchaudio.load is unavailable here: pass audio as arrays, not file paths")


def _module(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    # A spec makes importlib.util.find_spec("torchaudio") (coqui's availability check) see a package.
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=name == "torchaudio")
    module.__dict__.update(attrs)
    return module


def ensure_torchaudio() -> bool:
    """Make ``import torchaudio`` work; True if the stand-in was installed, False if the real one loads."""
    if getattr(sys.modules.get("torchaudio"), "XTTS_COMPAT", False):
        return True
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError):  # OSError: a CUDA build of torchaudio on a machine without CUDA
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
    else:
        return False
    functional = _module("torchaudio.functional", resample=resample, melscale_fbanks=melscale_fbanks)
    transforms = _module(
        "torchaudio.transforms", MelSpectrogram=MelSpectrogram, MelScale=MelScale, Spectrogram=Spectrogram
    )
    package = _module(
        "torchaudio", functional=functional, transforms=transforms, load=_load, XTTS_COMPAT=True
    )
    sys.modules.update(
        {"torchaudio": package, "torchaudio.functional": functional, "torchaudio.transforms": transforms}
    )
    return True
