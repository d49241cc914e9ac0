"""MP4 (H.264 yuv420p + AAC) writing and probing with PyAV."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from engines.media.files import atomic_output

DEFAULT_FPS = 25
DEFAULT_CRF = 23
DEFAULT_AUDIO_BITRATE = 96_000


class Mp4Writer:
    """Streams frames and audio into an MP4 that appears at ``path`` only once it is complete.

    On close, the shorter track is padded (silence, or the last frame repeated) so audio and video
    durations agree within one frame. Leaving the ``with`` block by an exception removes the temp file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        sample_rate: int,
        fps: int = DEFAULT_FPS,
        crf: int = DEFAULT_CRF,
        audio_bitrate: int = DEFAULT_AUDIO_BITRATE,
        preset: str = "veryfast",
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError("H.264 yuv420p needs even width and height")
        self._output = atomic_output(path)
        self._tmp = self._output.__enter__()
        self._container = av.open(str(self._tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        self._video = self._container.add_stream("libx264", rate=fps)
        self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
        self._video.options = {"crf": str(crf), "preset": preset}
        self._audio = self._container.add_stream("aac", rate=sample_rate)
        self._audio.bit_rate = audio_bitrate
        self._audio.layout = "mono"
        self.fps, self.sample_rate = fps, sample_rate
        self.frames_written = 0
        self.samples_written = 0
        self._last_frame: np.ndarray | None = None
        self._closed = False

    @property
    def samples_per_frame(self) -> float:
        return self.sample_rate / self.fps

    def write_frames(self, frames: np.ndarray) -> None:
        """Append RGB uint8 frames shaped [N, H, W, 3] (or one [H, W, 3])."""
        frames = frames[None] if frames.ndim == 3 else frames
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = self.frames_written
            frame.time_base = Fraction(1, self.fps)
            self._container.mux(self._video.encode(frame))
            self.frames_written += 1
            self._last_frame = rgb

    def write_audio(self, pcm: np.ndarray) -> None:
        """Append mono float32 samples at ``sample_rate``."""
        if pcm.size == 0:
            return
        frame = av.AudioFrame.from_ndarray(
            np.clip(pcm, -1, 1).astype(np.float32).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = self.sample_rate
        frame.pts = self.samples_written
        frame.time_base = Fraction(1, self.sample_rate)
        self._container.mux(self._audio.encode(frame))
        self.samples_written += pcm.size

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._pad_to_common_duration()
            self._container.mux(self._video.encode(None))
            self._container.mux(self._audio.encode(None))
            self._container.close()
        except BaseException as exc:
            self._output.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._output.__exit__(None, None, None)

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._container.close()
        error = RuntimeError("MP4 writing aborted")
        self._output.__exit__(RuntimeError, error, None)

    def _pad_to_common_duration(self) -> None:
        frames_for_audio = math.ceil(self.samples_written / self.samples_per_frame)
        if self._last_frame is not None and frames_for_audio > self.frames_written:
            self.write_frames(np.repeat(self._last_frame[None], frames_for_audio - self.frames_written, 0))
        target_samples = round(self.frames_written * self.samples_per_frame)
        if target_samples > self.samples_written:
            self.write_audio(np.zeros(target_samples - self.samples_written, np.float32))

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class StreamInfo:
    codec: str
    duration_s: float


@dataclass(frozen=True)
class Mp4Info:
    video: list[StreamInfo]
    audio: list[StreamInfo]
    width: int
    height: int
    fps: float
    frame_count: int
    sample_rate: int
    pix_fmt: str


def probe_mp4(path: str | Path) -> Mp4Info:
    """Read what a player sees: codecs, size, rate and per-stream durations (frame/sample exact)."""
    with av.open(str(path)) as container:
        video_streams = container.streams.video
        audio_streams = container.streams.audio
        v = video_streams[0]
        frame_count = sum(1 for _ in container.demux(v) if _.size)
        fps = float(v.average_rate or v.guessed_rate)
        width, height, pix_fmt = v.codec_context.width, v.codec_context.height, v.codec_context.pix_fmt
        video = [StreamInfo(s.codec_context.name, float(s.duration * s.time_base)) for s in video_streams]
        audio = [StreamInfo(s.codec_context.name, float(s.duration * s.time_base)) for s in audio_streams]
        sample_rate = audio_streams[0].codec_context.sample_rate if audio_streams else 0
    return Mp4Info(video, audio, width, height, fps, frame_count, sample_rate, pix_fmt)


def read_frames(path: str | Path) -> np.ndarray:
    """All video frames as RGB uint8 [N, H, W, 3]."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    from engines.media.audio import load_audio

    return load_audio(path)
