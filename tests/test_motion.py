import numpy as np
import pytest
import soundfile as sf

from engines.errors import InputError, InvalidAudioError
from engines.motion import CHANNELS, MotionGenerator, MotionTrack

FPS = 25


@pytest.fixture(scope="module")
def speech(data_dir) -> tuple[np.ndarray, int]:
    pcm, sample_rate = sf.read(data_dir / "LJ001-0001.wav", dtype="float32")
    return pcm, sample_rate


def _chunked(generator: MotionGenerator, pcm: np.ndarray, sample_rate: int, seed: int) -> MotionTrack:
    """Feed 0.5-1 s chunks of arbitrary (non frame-multiple) length, then flush."""
    rng = np.random.default_rng(seed)
    parts, start = [], 0
    while start < pcm.size:
        size = int(rng.integers(sample_rate // 2, sample_rate))
        parts.append(generator.from_audio(pcm[start : start + size], sample_rate))
        start += size
    parts.append(generator.flush())
    return MotionTrack.concatenate(parts)


def _events(mask: np.ndarray) -> np.ndarray:
    """Start frames of runs of True."""
    return np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))


def test_same_seed_same_motion_other_seed_differs(speech):
    pcm, sr = speech
    a = MotionGenerator(seed=7).from_audio(pcm, sr)
    b = MotionGenerator(seed=7).from_audio(pcm, sr)
    c = MotionGenerator(seed=8).from_audio(pcm, sr)
    np.testing.assert_array_equal(a.as_array(), b.as_array())
    np.testing.assert_array_equal(a.mouth_open, c.mouth_open)  # the mouth follows the audio alone
    assert not np.array_equal(a.yaw, c.yaw)
    assert not np.array_equal(a.blink, c.blink)


def test_streaming_chunks_equal_one_shot(speech):
    pcm, sr = speech
    one_shot = MotionGenerator(seed=3)
    whole = MotionTrack.concatenate([one_shot.from_audio(pcm, sr), one_shot.flush()])
    for chunk_seed in (0, 1):
        streamed = _chunked(MotionGenerator(seed=3), pcm, sr, chunk_seed)
        assert len(streamed) == len(whole)
        np.testing.assert_allclose(streamed.as_array(), whole.as_array(), atol=1e-5)


def test_idle_streams_seamlessly():
    whole = MotionGenerator(seed=2).idle(250)
    gen = MotionGenerator(seed=2)
    parts = MotionTrack.concatenate([gen.idle(n) for n in (1, 60, 0, 189)])
    np.testing.assert_array_equal(parts.as_array(), whole.as_array())


def test_frame_count_is_whole_frames_and_flush_pads_the_tail():
    sr = 22050  # 882 samples per frame
    gen = MotionGenerator(fps=FPS)
    assert len(gen.from_audio(np.zeros(10 * 882 + 500, np.float32), sr)) == 10
    assert len(gen.from_audio(np.zeros(300, np.float32), sr)) == 0  # 800 pending, still short of a frame
    assert len(gen.from_audio(np.zeros(100, np.float32), sr)) == 1  # 900: one frame, 18 left over
    assert len(gen.flush()) == 1
    assert len(gen.flush()) == 0
    assert gen.frames_emitted == 12


def test_fractional_samples_per_frame_keep_long_run_alignment():
    sr, fps = 16000, 24  # 666.67 samples per frame
    gen = MotionGenerator(fps=fps)
    total = sum(len(gen.from_audio(np.zeros(1000, np.float32), sr)) for _ in range(48))
    assert total == 48_000 * fps // sr
    assert gen.fps == fps


def test_mouth_opens_in_speech_and_closes_in_silence(speech):
    pcm, sr = speech
    silence = np.zeros(sr, np.float32)
    track = MotionGenerator().from_audio(np.concatenate([silence, pcm, silence]), sr)
    hop = sr // FPS
    frames = len(track)
    padded = np.concatenate([silence, pcm, silence])
    rms = np.sqrt(np.mean(padded[: frames * hop].reshape(frames, hop) ** 2, axis=1))
    speaking, pausing = rms > 0.03, rms < 0.003  # about -30 dBFS (vowels) and -50 dBFS (pauses)
    assert track.mouth_open[:FPS].max() < 0.02  # leading second of silence
    assert track.mouth_open[-FPS // 2 :].max() < 0.05  # settled shut in the trailing silence
    assert track.mouth_open[speaking].mean() > 0.3
    assert track.mouth_open[speaking].mean() > 5 * track.mouth_open[pausing].mean()
    assert track.mouth_open.min() >= 0.0 and track.mouth_open.max() <= 1.0
    assert track.mouth_width.min() >= -1.0 and track.mouth_width.max() <= 1.0
    assert track.mouth_width[speaking].std() > 0.1  # the vowel shape varies while speaking


def test_idle_blinks_every_three_to_six_seconds():
    for seed in range(4):
        track = MotionGenerator(seed=seed).idle(10 * FPS)
        starts = _events(track.blink > 0)
        assert len(starts) >= 2, f"seed {seed}: blinks at frames {starts}"
        gaps = np.diff(starts) / FPS
        assert np.all((gaps >= 3.0 - 1 / FPS) & (gaps <= 6.0 + 1 / FPS)), f"seed {seed}: gaps {gaps}"
        closed = track.blink > 0
        assert closed.sum() <= len(starts) * 5  # each ~150 ms: 4 frames at 25 fps
        assert np.isclose(track.blink.max(), 1.0)
        assert track.mouth_open.max() == 0.0


def test_head_motion_is_small_smooth_and_alive(speech):
    pcm, sr = speech
    gen = MotionGenerator(seed=5)
    track = MotionTrack.concatenate([gen.from_audio(pcm, sr), gen.flush(), gen.idle(10 * FPS)])
    for name, limit in (("yaw", 6.0), ("pitch", 4.0), ("roll", 3.0)):
        angle = getattr(track, name)
        assert np.abs(angle).max() <= limit, name
        assert angle.std() > 0.2, name
        assert np.abs(np.diff(angle)).max() < 0.6, name  # degrees per frame: no jumps
    assert np.abs(track.breath).max() <= 1.0
    assert track.breath.std() > 0.3
    speaking = track[: len(track) - 10 * FPS]
    idle = track[len(track) - 10 * FPS :]
    assert speaking.yaw.std() + speaking.pitch.std() > idle.yaw.std() + idle.pitch.std()


def test_accepts_int16_and_stereo_and_rejects_bad_audio(speech):
    pcm, sr = speech
    reference = MotionGenerator().from_audio(pcm, sr)
    as_int16 = MotionGenerator().from_audio((pcm * 32767).astype(np.int16), sr)
    np.testing.assert_allclose(as_int16.mouth_open, reference.mouth_open, atol=0.02)
    stereo = MotionGenerator().from_audio(np.stack([pcm, pcm], axis=1), sr)
    np.testing.assert_allclose(stereo.mouth_open, reference.mouth_open, atol=1e-5)
    with pytest.raises(InvalidAudioError):
        MotionGenerator().from_audio(np.array([0.0, np.nan], np.float32), sr)
    gen = MotionGenerator()
    gen.from_audio(np.zeros(1000, np.float32), 22050)
    with pytest.raises(InputError):
        gen.from_audio(np.zeros(1000, np.float32), 16000)  # partial frame pending at the old rate
    gen.flush()
    assert len(gen.from_audio(np.zeros(16000, np.float32), 16000)) == FPS


def test_track_helpers():
    gen = MotionGenerator(seed=1)
    a, b = gen.idle(30), gen.idle(20)
    joined = MotionTrack.concatenate([a, b])
    assert len(joined) == 50 and joined.seconds == pytest.approx(2.0)
    np.testing.assert_array_equal(joined[30:].as_array(), b.as_array())
    assert joined.as_array().shape == (50, len(CHANNELS))
    assert all(getattr(joined, name).dtype == np.float32 for name in CHANNELS)
    assert len(MotionTrack.empty(FPS)) == 0
    assert len(MotionTrack.concatenate([], fps=FPS)) == 0
    rebuilt = MotionTrack.from_array(joined.as_array(), FPS)
    np.testing.assert_array_equal(rebuilt.as_array(), joined.as_array())
    with pytest.raises(ValueError):
        MotionTrack.concatenate([a, MotionGenerator(fps=30).idle(3)])
    with pytest.raises(ValueError):
        MotionTrack(FPS, *[np.zeros(3)] * 6, np.zeros(4))
    with pytest.raises(TypeError):
        a[0]
