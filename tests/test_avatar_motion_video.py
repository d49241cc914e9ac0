"""An avatar made with its owner's video (issue 14, item 5), through the avatar stage, the pipeline and
the CLI: the statistics are stored with the avatar (never the video), its renders and idle loop use them,
a refused video leaves nothing behind, DELETE removes them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engines.errors import NoFaceError
from engines.motion.reference import IDLE_SHARE
from realtime_avatar.cli import EXIT_BAD_INPUT, main
from realtime_avatar.config import Settings
from realtime_avatar.pipeline import AvatarPipeline
from realtime_avatar.stages import Animation, UploadTooLargeError
from tests.motion_videos import MotionScript, faceless_video, scripted_video

SCRIPT = MotionScript(seconds=12, yaw_deg=5.0, pitch_deg=2.0, blink_every_s=2.0)


@pytest.fixture(scope="module")
def video() -> bytes:
    return scripted_video(SCRIPT)


@pytest.fixture
def stage(tmp_path, monkeypatch) -> Animation:
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    return Animation(Settings())


def _stored_files(stage: Animation) -> list[str]:
    root = stage.settings.cache_path / "assets"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_avatar_stores_statistics_not_the_video_and_moves_by_them(stage, data_dir, video):
    image = (data_dir / "biden.jpg").read_bytes()
    plain = stage.prepare_avatar(image)
    created = stage.prepare_avatar(image, video)
    assert created["avatar_id"] != plain["avatar_id"]  # the same face with other motion is another avatar
    assert "motion" not in plain
    summary = created["motion"]
    assert summary["seconds"] == pytest.approx(SCRIPT.seconds, abs=0.1)
    assert summary["blink_interval_median_s"] == pytest.approx(SCRIPT.blink_every_s, abs=0.1)
    assert stage.prepare_avatar(image, video) == created  # the same upload again: the same id, no new work

    stored = stage.store.get("motions", created["avatar_id"])
    assert stored is not None and len(stored) < 2000 and json.loads(stored)["version"] == 1
    assert not any(b"ftyp" in (stage.store.get(kind, created["avatar_id"]) or b"")
                   for kind in ("avatars", "motions"))  # no trace of the video's bytes

    reference = stage.reference_motion(created["avatar_id"])
    assert reference is not None and stage.reference_motion(plain["avatar_id"]) is None
    generic, own = stage.new_motion(), stage.new_motion(reference)
    assert own._blinks._interval_s == pytest.approx(reference.generator_options()["blink_interval_s"])
    assert generic._blinks._interval_s == (3.0, 6.0)
    # Realtime: its own idle loop, drawn apart from the generic one's frames.
    portrait = stage.portrait(created["avatar_id"])
    assert stage.idle_loop(reference) is not stage.idle_loop()
    assert stage.idle_loop(reference) is stage.idle_loop(reference)
    own_loop, generic_loop = stage.idle_loop(reference).loop(), stage.idle_loop().loop()
    assert own_loop.yaw.std() == pytest.approx(reference.head_std_deg[0] * IDLE_SHARE, rel=0.05)
    blinks = [int(np.sum(np.diff((loop.blink > 0.5).astype(int)) == 1)) for loop in (own_loop, generic_loop)]
    assert blinks[0] > blinks[1]  # every 2 s, as in the video, against the generic 2.5-5 s
    assert stage.idle_frames(portrait, reference).shape == stage.idle_frames(portrait).shape
    assert stage.speech_animator(portrait, 16000, 5, reference).motion._base is stage.idle_loop(reference)

    assert stage.delete_avatar(created["avatar_id"])["deleted"]
    assert stage.store.get("motions", created["avatar_id"]) is None
    assert stage.store.get("avatars", created["avatar_id"]) is None


def test_a_refused_video_leaves_nothing_behind(stage, data_dir, monkeypatch):
    image = (data_dir / "biden.jpg").read_bytes()
    before = _stored_files(stage)
    with pytest.raises(NoFaceError):
        stage.prepare_avatar(image, faceless_video(11.0))
    assert _stored_files(stage) == before
    stage.settings.limits.max_motion_video_bytes = 1000
    with pytest.raises(UploadTooLargeError, match="1000 bytes"):
        stage.prepare_avatar(image, b"x" * 1001)
    assert _stored_files(stage) == before


def test_pipeline_renders_with_the_owner_motion(tmp_path, data_dir, video, monkeypatch):
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    pipeline = AvatarPipeline(Settings())
    path = tmp_path / "motion.mp4"
    path.write_bytes(video)
    portrait, reference = pipeline.prepare_avatar(data_dir / "biden.jpg", path)
    assert reference is not None and reference.seconds == pytest.approx(SCRIPT.seconds, abs=0.1)
    report = pipeline.render_mp4("Hello there.", "en", tmp_path / "out.mp4", portrait=portrait,
                                 reference=reference)
    assert report.frames > 0 and report.path.stat().st_size > 0


def _cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["render", "--text", "Hi there.", *args])
    return code, capsys.readouterr().err


def test_cli_refuses_an_unusable_motion_video(capsys, tmp_path, monkeypatch):
    out = tmp_path / "out" / "clip.mp4"
    faceless = tmp_path / "faceless.mp4"
    faceless.write_bytes(faceless_video(11.0))
    code, err = _cli(capsys, "--motion-video", str(faceless), "-o", str(out))
    assert code == EXIT_BAD_INPUT and "error [no_face]" in err and not out.exists()
    code, err = _cli(capsys, "--motion-video", str(tmp_path / "missing.mp4"), "-o", str(out))
    assert code == EXIT_BAD_INPUT and "error [motion_video_not_found]" in err
    monkeypatch.setenv("AVATAR_LIMITS__MAX_MOTION_VIDEO_BYTES", "1000")
    code, err = _cli(capsys, "--motion-video", str(faceless), "-o", str(out))
    assert code == EXIT_BAD_INPUT and "error [upload_too_large]" in err and not out.exists()
