"""Lite renderer, judged on its pixels: every openness below is measured on rendered frames with dlib."""

import numpy as np
import pytest
import soundfile as sf
from skimage import data

from engines.avatar.lite import LiteRenderer
from engines.avatar.measure import FaceMeter
from engines.avatar.portrait import prepare_portrait
from engines.errors import NoFaceError
from engines.motion import CHANNELS, MotionGenerator, MotionTrack

FPS = 25


@pytest.fixture(scope="module")
def portraits(data_dir):
    return {
        "astronaut": prepare_portrait(data.astronaut(), 256),
        "biden": prepare_portrait(data_dir / "biden.jpg", 256),
    }


@pytest.fixture(scope="module")
def renderer() -> LiteRenderer:
    return LiteRenderer()


@pytest.fixture(scope="module")
def speech(data_dir) -> tuple[np.ndarray, int]:
    pcm, sample_rate = sf.read(data_dir / "LJ001-0001.wav", dtype="float32")
    return pcm[: 6 * sample_rate], sample_rate  # 6 s: speech with pauses, and always a blink


def _still(n: int = 1, **values: float) -> MotionTrack:
    return MotionTrack(FPS, **{name: np.full(n, values.get(name, 0.0), np.float32) for name in CHANNELS})


def _measure(renderer, portrait, **values) -> tuple[float, float]:
    measured = FaceMeter().measure(renderer.render(portrait, _still(**values))[0])
    return measured.mouth_open, measured.eye_open


def _dips(series: np.ndarray, ratio: float) -> list[int]:
    """Frames where a run of values below ``ratio * median`` starts."""
    low = series < ratio * np.median(series)
    return [int(i) for i in np.flatnonzero(low & ~np.concatenate([[False], low[:-1]]))]


def test_output_shape_dtype_and_rest_pose_is_the_portrait(renderer, portraits):
    as_photographed = LiteRenderer(close_lips=0.0)
    for portrait in portraits.values():
        frames = as_photographed.render(portrait, _still(3))
        assert frames.shape == (3, 256, 256, 3) and frames.dtype == np.uint8
        np.testing.assert_array_equal(frames[0], portrait.image)
        assert renderer.render(portrait, MotionTrack.empty(FPS)).shape == (0, 256, 256, 3)
    # By default mouth_open 0 means closed lips: the astronaut smiles with her teeth apart in the photo.
    astronaut = portraits["astronaut"]
    photo = FaceMeter().measure(astronaut.image).mouth_open
    assert _measure(renderer, astronaut)[0] < photo - 0.04


def test_render_is_deterministic_and_chunk_independent(renderer, portraits, speech):
    pcm, sr = speech
    track = MotionGenerator(seed=4).from_audio(pcm[:sr], sr)
    portrait = portraits["biden"]
    whole = renderer.render(portrait, track)
    np.testing.assert_array_equal(whole, LiteRenderer().render(portrait, track))
    parts = np.concatenate([renderer.render(portrait, track[:7]), renderer.render(portrait, track[7:])])
    np.testing.assert_array_equal(whole, parts)


def test_360px(renderer, data_dir):
    portrait = prepare_portrait(data_dir / "biden.jpg", 360)
    closed, _ = _measure(renderer, portrait)
    opened, _ = _measure(renderer, portrait, mouth_open=1.0)
    assert opened > closed + 0.2


@pytest.mark.parametrize("name", ["astronaut", "biden"])
def test_measured_mouth_follows_mouth_open(renderer, portraits, name):
    openness = [_measure(renderer, portraits[name], mouth_open=m)[0] for m in (0.0, 0.5, 1.0)]
    assert openness[0] < openness[1] < openness[2], openness
    assert openness[2] - openness[0] > 0.2, openness  # inner-lip gap gains a fifth of the mouth width


@pytest.mark.parametrize("name", ["astronaut", "biden"])
def test_measured_eyes_close_on_blink(renderer, portraits, name):
    _, opened = _measure(renderer, portraits[name])
    _, closed = _measure(renderer, portraits[name], blink=1.0)
    assert closed < 0.75 * opened, (opened, closed)


@pytest.mark.parametrize("name", ["astronaut", "biden"])
def test_speech_end_to_end_measured_on_pixels(renderer, portraits, speech, name):
    """Audio -> motion -> frames -> dlib: the drawn mouth follows the audio envelope; blinks show."""
    pcm, sr = speech
    track = MotionGenerator(seed=0).from_audio(pcm, sr)
    measured = FaceMeter().measure_video(renderer.render(portraits[name], track))
    hop = sr // FPS
    rms = np.sqrt(np.mean(pcm[: len(track) * hop].reshape(len(track), hop) ** 2, axis=1))
    correlation = np.corrcoef(measured.mouth_open, rms)[0, 1]
    assert correlation > 0.5, correlation  # observed ~0.7 on both portraits

    dips = _dips(measured.eye_open, 0.75)
    scheduled = np.flatnonzero(track.blink > 0)
    assert dips, "no blink visible in 6 s"
    assert all(np.abs(scheduled - dip).min() <= 2 for dip in dips), (dips, scheduled)  # no false blinks


@pytest.mark.parametrize("name", ["astronaut", "biden"])
def test_idle_is_steady(renderer, portraits, name):
    track = MotionGenerator(seed=1).idle(3 * FPS)
    frames = renderer.render(portraits[name], track).astype(np.int16)
    steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    blinking = (track.blink[1:] > 0) | (track.blink[:-1] > 0)
    assert steps[~blinking].max() < 1.0, steps  # gray levels per pixel, frame to frame
    assert steps.max() < 2.0, steps
    # Background corners and the bottom edge never move: the body and room stay put.
    corners = frames[:, :24, :24]
    assert np.abs(corners - corners[0]).max() <= 1


def test_meter_needs_a_face():
    with pytest.raises(NoFaceError):
        FaceMeter().measure(np.full((256, 256, 3), 127, np.uint8))
