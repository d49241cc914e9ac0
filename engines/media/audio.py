"""Audio decoding, resampling and WAV encoding for the CPU path (no torchaudio)."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

from engines.errors import AudioTooShortError, InvalidAudioError, public_message

AudioSource = str | Path | bytes


def load_audio(source: AudioSource, *, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode any container/codec FFmpeg knows into mono float32 in [-1, 1] at its native rate."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        with av.open(stream, mode="r") as container:
            if not container.streams.audio:
                raise InvalidAudioError("the file has no audio stream")
            audio_stream = container.streams.audio[0]
            sample_rate = audio_stream.codec_context.sample_rate
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            parts: list[np.ndarray] = []
            decoded = 0
            for frame in container.decode(audio_stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
                    decoded += out.samples
                if max_seconds is not None and decoded > max_seconds * sample_rate:
                    raise InvalidAudioError(f"audio is longer than the {max_seconds:g} s limit")
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except InvalidAudioError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InvalidAudioError(f"could not decode audio: {public_message(str(exc))}") from exc
    pcm = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    if pcm.size == 0 or not np.isfinite(pcm).all():
        raise InvalidAudioError("the audio is empty or holds non-finite samples")
    return np.clip(pcm, -1.0, 1.0), sample_rate


def require_duration(pcm: np.ndarray, sample_rate: int, min_seconds: float) -> None:
    seconds = pcm.size / sample_rate
    if seconds < min_seconds:
        raise AudioTooShortError(f"reference audio is {seconds:.2f} s; at least {min_seconds:g} s is needed")


def resample(pcm: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return pcm.astype(np.float32, copy=False)
    return soxr.resample(pcm.astype(np.float32, copy=False), rate_in, rate_out).astype(np.float32)


def wav_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV, the format every player and browser accepts."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(pcm, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
