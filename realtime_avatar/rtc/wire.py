"""The WebSocket fallback's binary framing, shared by the runtime, the harness and the page (fallback.ts).

A call over one WebSocket (``GET /v1/rtc/ws?session_id=...&language=...``) carries the data channel's JSON
events as text messages, both ways, unchanged (``realtime_avatar.rtc.protocol``), and media as binary
messages whose first byte says what they are (little-endian throughout):

client -> server
  ``0x01`` microphone: ``u32`` sample rate (16000 or 48000), then 16-bit PCM, mono, at most 100 ms
  (a browser's AudioWorklet sends 20 ms at a time)
server -> client
  ``0x11`` audio: ``u64`` position on the call's clock (48 kHz samples since the call started), then
  16-bit PCM, mono, 48 kHz (20 ms per message)
  ``0x12`` video: ``u64`` position on the same clock of the sample the frame shows with, then one JPEG

Audio and video carry positions on the one clock, so a player schedules the audio on its positions and
shows each frame when its position is heard: lips stay on the voice however the network delays them.
"""

from __future__ import annotations

import io
import struct

import numpy as np

MIC = 0x01
AUDIO = 0x11
VIDEO = 0x12
AUDIO_RATE = 48_000  # the call's clock: positions count its samples
MIC_RATES = (16_000, 48_000)
MAX_MIC_S = 0.1
_MIC_HEAD = struct.Struct("<BI")
_MEDIA_HEAD = struct.Struct("<BQ")
JPEG_QUALITY = 80


class FrameError(ValueError):
    """A binary message that is not a microphone frame."""


def mic_frame(pcm: np.ndarray, sample_rate: int) -> bytes:
    samples = np.asarray(pcm)
    if samples.dtype != np.int16:
        samples = np.clip(np.round(samples.astype(np.float32) * 32767), -32768, 32767).astype(np.int16)
    return _MIC_HEAD.pack(MIC, sample_rate) + samples.astype("<i2").tobytes()


def parse_mic(data: bytes) -> tuple[int, np.ndarray]:
    """(sample rate, int16 samples) of a microphone frame; FrameError if it is not one."""
    if len(data) < _MIC_HEAD.size or data[0] != MIC:
        raise FrameError("a binary message must be a microphone frame (type 0x01)")
    _, rate = _MIC_HEAD.unpack_from(data)
    if rate not in MIC_RATES:
        raise FrameError(f"microphone audio must be at {' or '.join(map(str, MIC_RATES))} Hz, not {rate}")
    body = data[_MIC_HEAD.size:]
    if len(body) % 2 or len(body) // 2 > rate * MAX_MIC_S:
        raise FrameError(f"a microphone frame holds whole 16-bit samples, at most {MAX_MIC_S * 1000:.0f} ms")
    return rate, np.frombuffer(body, "<i2").astype(np.int16)


def audio_message(position: int, pcm: np.ndarray) -> bytes:
    return _MEDIA_HEAD.pack(AUDIO, position) + np.asarray(pcm, "<i2").tobytes()


def video_message(position: int, jpeg: bytes) -> bytes:
    return _MEDIA_HEAD.pack(VIDEO, position) + jpeg


def parse_media(data: bytes) -> tuple[int, int, bytes]:
    """(type, position, payload) of a server media message."""
    if len(data) < _MEDIA_HEAD.size or data[0] not in (AUDIO, VIDEO):
        raise FrameError("not an audio (0x11) or video (0x12) message")
    kind, position = _MEDIA_HEAD.unpack_from(data)
    return kind, position, data[_MEDIA_HEAD.size:]


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
