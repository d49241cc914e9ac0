import io
from dataclasses import dataclass

import av
import numpy as np
import pytest

from engines.media.mp4 import FragmentedMp4Writer, fragment_boxes

SR = 24_000
FPS = 25
SIZE = 256
SECONDS = 3.0
CHUNK_S = 0.5


def _gradient_frames(n: int, size: int = SIZE) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return np.stack(
        [np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, ((x + y) // 2 + 3 * i) % 256], -1) for i in range(n)]
    ).astype(np.uint8)


def _tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@dataclass
class Streamed:
    drained: list[bytes]  # one entry per chunk, drained right after writing it
    tail: bytes  # what close() returned
    frames_written: int

    @property
    def data(self) -> bytes:
        return b"".join(self.drained) + self.tail


def _stream(keyframe_seconds: float) -> Streamed:
    frames, pcm = _gradient_frames(round(SECONDS * FPS)), _tone(SECONDS)
    writer = FragmentedMp4Writer(
        width=SIZE, height=SIZE, sample_rate=SR, fps=FPS, keyframe_seconds=keyframe_seconds
    )
    drained = []
    for i in range(round(SECONDS / CHUNK_S)):
        writer.write_audio(pcm[round(i * CHUNK_S * SR) : round((i + 1) * CHUNK_S * SR)])
        writer.write_frames(frames[round(i * CHUNK_S * FPS) : round((i + 1) * CHUNK_S * FPS)])
        drained.append(writer.drain())
    tail = writer.close()
    assert writer.close() == b"" and writer.drain() == b""  # idempotent, nothing left behind
    return Streamed(drained, tail, writer.frames_written)


@pytest.fixture(scope="module")
def streamed() -> Streamed:
    return _stream(keyframe_seconds=1.0)


def _packets(data: bytes) -> dict[str, list[av.Packet]]:
    packets: dict[str, list[av.Packet]] = {"video": [], "audio": []}
    with av.open(io.BytesIO(data)) as container:
        for packet in container.demux():
            if packet.size:
                packets[packet.stream.type].append(packet)
    return packets


def _end_s(packets: list[av.Packet]) -> float:
    return max(float((p.pts + p.duration) * p.time_base) for p in packets)


def test_fragments_arrive_before_close(streamed):
    before_close = b"".join(streamed.drained)
    boxes = fragment_boxes(before_close)
    assert boxes[:4] == ["ftyp", "moov", "moof", "mdat"]
    # The header comes out with the first chunk; the first fragment (frames 0-24) as soon as the
    # keyframe at frame 25 is written, i.e. in the third 0.5 s chunk, not at close().
    assert fragment_boxes(streamed.drained[0]) == ["ftyp", "moov"]
    first_moof_chunk = next(i for i, d in enumerate(streamed.drained) if b"moof" in d)
    assert first_moof_chunk == 2
    assert "moof" not in fragment_boxes(b"".join(streamed.drained[:2]))
    assert "moof" in fragment_boxes(streamed.tail)  # the last fragment only at close


def test_first_fragment_leaves_with_the_next_keyframe():
    # Audio ahead of video (as the pipeline writes it): with zerolatency the encoder holds no frames
    # back, so fragment 0 (frames 0-24) is out as soon as keyframe 25 - the 26th frame - goes in.
    frames = _gradient_frames(40)
    with FragmentedMp4Writer(width=SIZE, height=SIZE, sample_rate=SR, fps=FPS) as writer:
        writer.write_audio(_tone(2.0))
        data, frames_at_first_moof = writer.drain(), None
        for frame in frames:
            writer.write_frames(frame)
            data += writer.drain()
            if "moof" in fragment_boxes(data):
                frames_at_first_moof = writer.frames_written
                break
    assert frames_at_first_moof == FPS + 1
    assert fragment_boxes(data)[:4] == ["ftyp", "moov", "moof", "mdat"]


def test_stream_decodes_with_matching_durations(streamed):
    data = streamed.data
    with av.open(io.BytesIO(data)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
        assert (video.codec_context.width, video.codec_context.height) == (SIZE, SIZE)
        assert audio.codec_context.sample_rate == SR
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert abs(len(decoded) - SECONDS * FPS) <= 1
    assert decoded[0].shape == (SIZE, SIZE, 3)
    # The gradient survives encoding: a mid-stream frame is close to what went in.
    expected = _gradient_frames(40)[39].astype(np.int16)
    assert np.abs(decoded[39].astype(np.int16) - expected).mean() < 12
    packets = _packets(data)
    video_end, audio_end = _end_s(packets["video"]), _end_s(packets["audio"])
    assert abs(video_end - audio_end) <= 1 / FPS
    assert video_end >= SECONDS - 1 / FPS


@pytest.mark.parametrize("keyframe_seconds", [1.0, 0.5])
def test_one_fragment_per_keyframe_interval(keyframe_seconds):
    result = _stream(keyframe_seconds)
    boxes = fragment_boxes(result.data)
    assert boxes[:2] == ["ftyp", "moov"]
    assert abs(boxes.count("moof") - SECONDS / keyframe_seconds) <= 1
    gop = round(FPS * keyframe_seconds)
    keyframes = [i for i, p in enumerate(_packets(result.data)["video"]) if p.is_keyframe]
    assert keyframes == list(range(0, result.frames_written, gop))
    assert boxes.count("moof") == len(keyframes)  # a fragment starts at each keyframe


def test_shorter_track_is_padded_at_close():
    with FragmentedMp4Writer(width=64, height=64, sample_rate=SR, fps=FPS) as writer:
        writer.write_audio(_tone(2.013))
        writer.write_frames(_gradient_frames(20, size=64))
        head = writer.drain()
    data = head + writer.drain()  # the with block closed the writer; its tail waits for a drain
    assert writer.frames_written == 51  # ceil(2.013 s * 25 fps): the last frame repeated
    packets = _packets(data)
    assert len(packets["video"]) == 51
    assert abs(_end_s(packets["video"]) - _end_s(packets["audio"])) <= 1 / FPS


def test_odd_size_is_refused():
    with pytest.raises(ValueError, match="even"):
        FragmentedMp4Writer(width=65, height=64, sample_rate=SR)


def test_fragment_boxes_reads_sizes():
    def box(kind: bytes, payload: bytes) -> bytes:
        return (8 + len(payload)).to_bytes(4, "big") + kind + payload

    large = (1).to_bytes(4, "big") + b"mdat" + (16 + 3).to_bytes(8, "big") + b"abc"
    data = box(b"ftyp", b"isom") + box(b"moov", b"x" * 20) + large + box(b"moof", b"")
    assert fragment_boxes(data) == ["ftyp", "moov", "mdat", "moof"]
    assert fragment_boxes(data + b"\x00\x00") == ["ftyp", "moov", "mdat", "moof"]  # partial header ignored
    with pytest.raises(ValueError):
        fragment_boxes((4).to_bytes(4, "big") + b"free")


def test_exception_ends_the_stream_unpadded():
    with (
        pytest.raises(RuntimeError, match="renderer crashed"),
        FragmentedMp4Writer(width=64, height=64, sample_rate=SR, fps=FPS) as writer,
    ):
        writer.write_audio(_tone(1.0))
        writer.write_frames(_gradient_frames(5, size=64))
        raise RuntimeError("renderer crashed")
    assert writer.frames_written == 5  # no padding to the 1 s of audio
    assert writer.close() != b"" and writer.close() == b""  # already ended: only what was left to drain
