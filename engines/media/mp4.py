"""MP4 (H.264 yuv420p + AAC) writing and probing with PyAV."""

from __future__ import annotations

import io
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


class _AvMuxer:
    """H.264 yuv420p + AAC mono streams on an open PyAV output container, shared by the MP4 writers.

    ``_finish`` pads the shorter track (silence, or the last frame repeated) so audio and video
    durations agree within one frame, flushes both encoders and closes the container.
    """

    def __init__(
        self,
        container: av.container.OutputContainer,
        *,
        width: int,
        height: int,
        sample_rate: int,
        fps: int,
        crf: int,
        audio_bitrate: int,
        preset: str,
        x264_options: dict[str, str] | None = None,
    ) -> None:
        self._container = container
        self._video = container.add_stream("libx264", rate=fps)
        self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
        self._video.options = {"crf": str(crf), "preset": preset, **(x264_options or {})}
        self._audio = container.add_stream("aac", rate=sample_rate)
        self._audio.bit_rate = audio_bitrate
        self._audio.layout = "mono"
        self.fps, self.sample_rate = fps, sample_rate
        self.frames_written = 0
        self.samples_written = 0
        self._last_frame: np.ndarray | None = None
        self._closed = False

    @staticmethod
    def _check_size(width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise ValueError("H.264 yuv420p needs even width and height")

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

    def _finish(self) -> None:
        self._pad_to_common_duration()
        self._container.mux(self._video.encode(None))
        self._container.mux(self._audio.encode(None))
        self._container.close()

    def _pad_to_common_duration(self) -> None:
        frames_for_audio = math.ceil(self.samples_written / self.samples_per_frame)
        if self._last_frame is not None and frames_for_audio > self.frames_written:
            self.write_frames(np.repeat(self._last_frame[None], frames_for_audio - self.frames_written, 0))
        target_samples = round(self.frames_written * self.samples_per_frame)
        if target_samples > self.samples_written:
            self.write_audio(np.zeros(target_samples - self.samples_written, np.float32))


class Mp4Writer(_AvMuxer):
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
        self._check_size(width, height)
        self._output = atomic_output(path)
        self._tmp = self._output.__enter__()
        container = av.open(str(self._tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        super().__init__(
            container,
            width=width,
            height=height,
            sample_rate=sample_rate,
            fps=fps,
            crf=crf,
            audio_bitrate=audio_bitrate,
            preset=preset,
        )

    def drain(self) -> bytes:
        """Nothing: the bytes go to the file (the same interface as ``FragmentedMp4Writer``)."""
        return b""

    def close(self) -> bytes:
        """Pad, flush and move the finished file into place; ``b""`` (the bytes are in the file)."""
        if self._closed:
            return b""
        self._closed = True
        try:
            self._finish()
        except BaseException as exc:
            self._output.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._output.__exit__(None, None, None)
        return b""

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._container.close()
        error = RuntimeError("MP4 writing aborted")
        self._output.__exit__(RuntimeError, error, None)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _ByteSink(io.RawIOBase):
    """Collects what the muxer writes until ``take`` hands it out.

    It reports itself unseekable, so PyAV gives FFmpeg no seek callback: the fragmented muxer then
    never goes back to patch bytes that may already have been handed out.
    """

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


class FragmentedMp4Writer(_AvMuxer):
    """Streams frames and audio as fragmented MP4 bytes (``ftyp`` + empty ``moov``, then ``moof``/``mdat``).

    A fragment is cut at every keyframe, and a keyframe comes every ``keyframe_seconds``, so ``drain``
    yields new playable media about that often. ``close`` pads the shorter track like ``Mp4Writer``.
    """

    def __init__(
        self,
        *,
        width: int,
        height: int,
        sample_rate: int,
        fps: int = DEFAULT_FPS,
        crf: int = DEFAULT_CRF,
        audio_bitrate: int = DEFAULT_AUDIO_BITRATE,
        preset: str = "veryfast",
        keyframe_seconds: float = 1.0,
    ) -> None:
        self._check_size(width, height)
        gop = max(1, round(fps * keyframe_seconds))
        self._sink = _ByteSink()
        # empty_moov: the header goes out at once; default_base_moof: offsets relative to each moof,
        # as MSE and fMP4 players expect.
        container = av.open(
            self._sink,
            mode="w",
            format="mp4",
            options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
        )
        # zerolatency: no lookahead and no B-frames, so each frame leaves the encoder as it goes in;
        # a fixed GOP (no scene-cut keyframes) keeps fragments evenly spaced.
        super().__init__(
            container,
            width=width,
            height=height,
            sample_rate=sample_rate,
            fps=fps,
            crf=crf,
            audio_bitrate=audio_bitrate,
            preset=preset,
            x264_options={
                "tune": "zerolatency",
                "g": str(gop),
                "bf": "0",
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
            },
        )
        self._video.codec_context.gop_size = gop
        self._video.codec_context.max_b_frames = 0
        self.keyframe_seconds = keyframe_seconds

    def drain(self) -> bytes:
        """The bytes the muxer has produced since the last ``drain`` (often ``b""`` mid-fragment)."""
        return self._sink.take()

    def close(self) -> bytes:
        """Pad, flush and finish the stream; return the bytes not yet drained (``b""`` once all are)."""
        self._end(padded=True)
        return self.drain()

    def abort(self) -> None:
        """End the stream where it is, unpadded and without the closing ``mfra`` (a cut stream)."""
        self._end(padded=False)
        self._sink.take()

    def _end(self, *, padded: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if padded:
            self._finish()
        else:  # an exception is on its way: just end the stream where it is
            self._container.close()

    def __enter__(self) -> FragmentedMp4Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Unlike close(), this keeps the tail in the sink for a final drain().
        self._end(padded=exc_type is None)


def fragment_boxes(data: bytes) -> list[str]:
    """Top-level ISO-BMFF box types in order, e.g. ``['ftyp', 'moov', 'moof', 'mdat', ...]``.

    A box counts once its header is in ``data``, even if its body is cut off (a partial stream).
    """
    boxes: list[str] = []
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        header = 8
        if size == 1:  # 64-bit largesize follows the type
            if pos + 16 > len(data):
                break
            size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:  # box runs to the end of the data
            size = len(data) - pos
        if size < header:
            raise ValueError(f"bad box size {size} at byte {pos}")
        boxes.append(data[pos + 4 : pos + 8].decode("latin-1"))
        pos += size
    return boxes


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
