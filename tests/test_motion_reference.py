"""Motion from the owner's own video (issue 14, item 5): the extractor recovers scripted motion, refuses
what it cannot use, and the motion engine's output moves toward the video's statistics.

No real face video ships: every reference video here is rendered by the lite renderer from the fixture
portrait with known motion (tests/motion_videos.py) and encoded to MP4; the output is measured on its
decoded frames with the same extractor.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.errors import InvalidVideoError, NoFaceError, VideoTooLongError, VideoTooShortError
from engines.motion import reference as ref
from engines.motion.generator import MotionGenerator
from engines.motion.idle import IdleLoop
from engines.motion.reference import ReferenceMotion, extract_reference_motion
from engines.motion.track import MotionTrack
from tests.motion_videos import (
    FPS,
    MotionScript,
    encode,
    faceless_video,
    glance,
    portrait,
    render,
    scripted_video,
)

# The lite renderer's head turn is a 2-D warp whose parallax is flatter than a real head's: what it draws
# as 1 degree reads as ~0.55 (yaw) / ~0.8 (pitch) degrees on the generic 3-D face. The extractor is for
# real heads, so its readings of lite renders are checked for proportion and timing, and only loosely for
# scale (LITE_GAIN).
LITE_GAIN = (0.4, 1.1)


@pytest.fixture(scope="module")
def face():
    return portrait()


@pytest.fixture(scope="module")
def nodding(face) -> tuple[MotionScript, ReferenceMotion]:
    script = MotionScript(seconds=20, yaw_deg=6.0, yaw_hz=0.25, pitch_deg=3.0, pitch_hz=0.4,
                          blink_every_s=2.0, nod_every_s=4.0, nod_deg=5.0)
    return script, extract_reference_motion(scripted_video(script, face))


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """MotionTrack's angles as the camera-frame rotation R = Rz Ry Rx (OpenCV's decomposition order)."""
    x, y, z = np.radians([pitch, -yaw, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.mark.parametrize("angles", [(6.0, 0.0, 0.0), (0.0, 5.0, 0.0), (0.0, 0.0, 4.0), (8.0, -4.0, 3.0)])
def test_pose_solver_reads_a_true_rotation_with_motion_track_signs(angles):
    size = 512
    points = (_rotation(*angles) @ ref._OBJECT.T).T + np.array([0.0, 0.0, 600.0])  # 60 cm from the lens
    landmarks = np.zeros((68, 2), np.float32)
    landmarks[ref._LANDMARKS] = points[:, :2] / points[:, 2:] * size + size / 2
    assert ref._PoseSolver()(landmarks, (size, size)) == pytest.approx(angles, abs=0.05)


def test_extractor_recovers_scripted_head_motion_blinks_and_nods(face, nodding):
    script, stats = nodding
    assert stats.seconds == pytest.approx(script.seconds, abs=0.1)
    assert stats.face_share == 1.0
    # Timing is exact: the dominant sway frequencies are the scripted ones.
    yaw_hz, pitch_hz, _ = stats.head_freq_hz
    assert yaw_hz == pytest.approx(script.yaw_hz, abs=0.02)
    assert pitch_hz == pytest.approx(script.pitch_hz, abs=0.03)
    low, high = stats.head_band_hz
    assert low <= script.yaw_hz and high >= script.pitch_hz - 0.03
    # Blinks every 2 s: the intervals, their count and their length.
    expected = int((script.seconds - script.blink_every_s / 2 - script.blink_s) // script.blink_every_s) + 1
    assert abs(stats.blinks - expected) <= 1 and len(stats.blink_intervals_s) == stats.blinks - 1
    assert stats.blink_interval_median_s == pytest.approx(script.blink_every_s, abs=0.1)
    assert stats.blink_duration_s is not None and 0.05 <= stats.blink_duration_s <= script.blink_s + 0.05
    # Nods every 4 s (5 in 20 s), deeper than the sway.
    assert stats.nods_per_min == pytest.approx(60 / script.nod_every_s, abs=4.0)
    assert stats.nod_deg is not None and stats.nod_deg >= ref.NOD_MIN_DEG
    # Scale: the sway reads in proportion to what was drawn (LITE_GAIN above) ...
    yaw_std = script.yaw_deg / np.sqrt(2)
    assert LITE_GAIN[0] * yaw_std <= stats.head_std_deg[0] <= LITE_GAIN[1] * yaw_std
    # ... and half the turn reads as half (linear), with no nods where none were drawn.
    half = MotionScript(seconds=12, yaw_deg=script.yaw_deg / 2, yaw_hz=script.yaw_hz, pitch_deg=0.0,
                        blink_every_s=3.0)
    calm = extract_reference_motion(scripted_video(half, face))
    assert calm.head_std_deg[0] / stats.head_std_deg[0] == pytest.approx(0.5, abs=0.1)
    assert calm.head_freq_hz[0] == pytest.approx(script.yaw_hz, abs=0.03)
    assert calm.blink_interval_median_s == pytest.approx(3.0, abs=0.1)
    assert calm.nods_per_min <= 60 / script.nod_every_s / 2
    assert stats.saccades <= 1 and calm.saccades <= 1  # the lite renderer's eyes never move


def test_gaze_jumps_are_counted_as_saccades(face):
    """The eyes look aside and back every 1.5 s (4 px, ~0.17 eye widths) while the head holds still; a
    still-eyed video, and one whose head turns, show no saccades."""
    still = MotionScript(seconds=12, yaw_deg=0.0, pitch_deg=0.0, blink_every_s=100.0)  # no blinks
    frames = render(still.track(), face)
    every, pattern = round(1.5 * FPS), (-4, 0, 4, 0)
    shifts = np.array([pattern[(i // every) % len(pattern)] for i in range(len(frames))])
    glancing = extract_reference_motion(encode(glance(frames, face, shifts)))
    steady = extract_reference_motion(encode(frames))
    assert glancing.saccades == pytest.approx(int(np.sum(np.diff(shifts) != 0)), abs=1)
    assert steady.saccades == 0
    assert glancing.gaze_std is not None and steady.gaze_std is not None
    assert glancing.gaze_std > 3 * steady.gaze_std
    assert glancing.summary()["saccades_per_min"] == pytest.approx(60 * glancing.saccades / 12, abs=0.1)


def test_statistics_round_trip_and_map_onto_the_engines(nodding):
    _, stats = nodding
    assert ReferenceMotion.from_json(stats.to_json()) == stats
    with pytest.raises(ValueError, match="not serialised"):
        ReferenceMotion.from_json('{"version": 99}')

    options = stats.generator_options()
    assert options["head_speaking_deg"] == pytest.approx(stats.head_std_deg)
    assert options["head_idle_deg"] == pytest.approx(np.array(stats.head_std_deg) * ref.IDLE_SHARE, abs=1e-3)
    assert options["head_freq_hz"] == stats.head_band_hz
    low, high = options["blink_interval_s"]  # uniform with the intervals' median and quartile spread
    assert (low + high) / 2 == pytest.approx(stats.blink_interval_median_s, abs=0.05)
    assert options["nod_deg"] == stats.nod_deg
    MotionGenerator(**options).idle(10)  # every option is one the engine takes
    idle = stats.idle_options(loop_s=8.0)
    assert all(1 <= c <= 8 * 2.0 for c in idle["head_cycles"])
    assert len(IdleLoop(loop_s=8.0, **idle).loop()) == 8 * 25

    # Too few blinks (or nods) to say anything about a rhythm (or a depth): the generic ones stay.
    few = ReferenceMotion(seconds=12.0, frames=300, face_share=1.0, head_std_deg=(1.0, 1.0, 0.5),
                          head_freq_hz=(0.2, 0.3, 0.2), head_band_hz=(0.1, 0.4), blinks=2,
                          blink_intervals_s=(3.0,), nods=1, nod_deg=4.0)
    assert "blink_interval_s" not in few.generator_options() and "nod_deg" not in few.generator_options()
    assert "blink_interval_s" not in few.idle_options(8.0)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda face: faceless_video(12.0), NoFaceError, "face was found in 0%"),
        (lambda face: scripted_video(MotionScript(seconds=5.0), face), VideoTooShortError, "5.0 s"),
        (lambda face: faceless_video(62.0, size=32, fps=2), VideoTooLongError, "at most 60 s"),
        (lambda face: b"\x00\x00\x00\x18ftypmp42 certainly not a video", InvalidVideoError, "could not"),
        (lambda face: b"", InvalidVideoError, "empty"),
    ],
    ids=["no_face", "too_short", "too_long", "undecodable", "empty"],
)
def test_unusable_videos_are_refused(face, make, error, match):
    with pytest.raises(error, match=match):
        extract_reference_motion(make(face))


def test_a_file_without_video_is_refused(data_dir):
    with pytest.raises(InvalidVideoError, match="no video stream"):
        extract_reference_motion((data_dir / "LJ001-0001.wav").read_bytes())


def _distance(a: ReferenceMotion, b: ReferenceMotion) -> dict[str, float]:
    assert a.blink_interval_median_s is not None and b.blink_interval_median_s is not None
    yaw, pitch = (abs(a.head_std_deg[axis] - b.head_std_deg[axis]) for axis in (0, 1))
    return {"yaw": yaw, "pitch": pitch, "blink": abs(a.blink_interval_median_s - b.blink_interval_median_s)}


@pytest.fixture(scope="module")
def speech_then_listening(lj_speech):
    """9.7 s of speech then 10 s of listening: the output covers both kinds of micro-motion."""
    pcm, sample_rate = lj_speech

    def motion(options: dict) -> MotionTrack:
        generator = MotionGenerator(seed=0, fps=FPS, **options)
        return MotionTrack.concatenate([generator.from_audio(pcm, sample_rate), generator.flush(),
                                        generator.idle(10 * FPS)])

    return motion


@pytest.fixture(scope="module")
def generic_output(face, speech_then_listening) -> ReferenceMotion:
    return extract_reference_motion(encode(render(speech_then_listening({}), face)))


@pytest.mark.parametrize(
    "script",
    [MotionScript(yaw_deg=1.0, pitch_deg=0.6, blink_every_s=2.0),
     MotionScript(yaw_deg=16.0, pitch_deg=8.0, blink_every_s=7.0, blink_s=0.3)],
    ids=["calm_frequent_blinker", "lively_rare_blinker"],
)
def test_a_reference_video_moves_the_output_toward_its_statistics(face, speech_then_listening, generic_output,
                                                                  script):
    """The issue's Done-when: head-pose and blink-interval statistics of the output, measured on decoded
    frames, move toward the video's, against the generic engine. The lively video is far above the
    generic sway because a lite-rendered output reaches only part of the way (LITE_GAIN, and half sway
    while listening): at 16 degrees the driven yaw std is ~0.3 degree closer than the generic one's."""
    video = extract_reference_motion(scripted_video(script, face))
    own = extract_reference_motion(encode(render(speech_then_listening(video.generator_options()), face)))
    generic, driven = _distance(generic_output, video), _distance(own, video)
    for measure in ("yaw", "pitch", "blink"):
        assert driven[measure] < generic[measure], (measure, driven, generic, video, own, generic_output)
    assert driven["blink"] <= 0.5  # the blink rhythm itself is the person's
