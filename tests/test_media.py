import numpy as np
import pytest

from engines.errors import AudioTooShortError, InvalidAudioError
from engines.media.audio import load_audio, require_duration, resample, wav_bytes
from engines.media.mp4 import Mp4Writer, probe_mp4, read_frames

SR = 24_000


def _tone(seconds: float, freq: float = 220.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("audio_seconds, n_frames", [(2.0, 50), (2.013, 20), (1.0, 40)])
def test_mp4_streams_and_durations_match(tmp_path, audio_seconds, n_frames):
    path = tmp_path / "clip.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (n_frames, 64, 96, 3), dtype=np.uint8)
    with Mp4Writer(path, width=96, height=64, sample_rate=SR) as writer:
        writer.write_audio(_tone(audio_seconds))
        writer.write_frames(frames)
    info = probe_mp4(path)
    assert [s.codec for s in info.video] == ["h264"]
    assert [s.codec for s in info.audio] == ["aac"]
    assert (info.width, info.height, info.fps, info.pix_fmt) == (96, 64, 25.0, "yuv420p")
    assert abs(info.video[0].duration_s - info.audio[0].duration_s) <= 1 / 25
    assert info.video[0].duration_s >= max(audio_seconds, n_frames / 25) - 1 / 25
    assert read_frames(path).shape == (info.frame_count, 64, 96, 3)


def test_faststart_puts_moov_before_mdat(tmp_path):
    path = tmp_path / "clip.mp4"
    with Mp4Writer(path, width=64, height=64, sample_rate=SR) as writer:
        writer.write_audio(_tone(0.4))
        writer.write_frames(np.zeros((10, 64, 64, 3), np.uint8))
    head = path.read_bytes()
    assert head.index(b"moov") < head.index(b"mdat")


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError), Mp4Writer(path, width=64, height=64, sample_rate=SR) as writer:
        writer.write_frames(np.zeros((5, 64, 64, 3), np.uint8))
        raise RuntimeError("renderer crashed")
    assert list(tmp_path.iterdir()) == []


def test_audio_round_trip_and_resample():
    pcm = _tone(1.0)
    decoded, sr = load_audio(wav_bytes(pcm, SR))
    assert sr == SR and decoded.size == pcm.size
    assert np.max(np.abs(decoded - pcm)) < 1e-3
    assert resample(pcm, SR, 16_000).size == 16_000


def test_bad_audio_is_refused():
    with pytest.raises(InvalidAudioError):
        load_audio(b"this is not audio at all" * 10)
    with pytest.raises(AudioTooShortError):
        require_duration(_tone(1.5), SR, 2.0)
    with pytest.raises(InvalidAudioError):
        load_audio(wav_bytes(_tone(3.0), SR), max_seconds=2.0)


def test_finished_file_gets_ordinary_permissions(tmp_path):
    import os

    from engines.media.files import atomic_output

    with atomic_output(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"data")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~umask
