"""LivePortrait avatar engine: the renderer contract on small random networks saved in the official layout.

Same code paths as the release networks (see test_liveportrait.py for why rendering tests use a narrow
config); the astronaut portrait gives real dlib landmarks for the face crop and the paste-back.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from test_liveportrait import TINY

from engines import registry
from engines.avatar.liveportrait import FETCH_COMMAND, LivePortraitNetworks, save_networks, weight_files
from engines.avatar.liveportrait.engine import (
    LivePortraitRenderer,
    eye_ratios,
    face_crop_transform,
    paste_mask_template,
)
from engines.avatar.portrait import Portrait, prepare_portrait
from engines.errors import ModelUnavailableError
from engines.motion import CHANNELS, MotionTrack
from realtime_avatar.models import REGISTRY

FPS = 25


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    nets = LivePortraitNetworks(TINY)
    for module in nets.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    root = tmp_path_factory.mktemp("lp-engine")
    save_networks(nets, root)
    return root


@pytest.fixture(scope="module")
def portrait() -> Portrait:
    return prepare_portrait(data.astronaut(), 256)


@pytest.fixture(scope="module")
def renderer(weights) -> LivePortraitRenderer:
    return LivePortraitRenderer(weights_dir=weights, config=TINY, batch_size=4)


def _track(n: int, **channels: np.ndarray | float) -> MotionTrack:
    values = {c: np.broadcast_to(channels.get(c, 0.0), n).astype(np.float32) for c in CHANNELS}
    return MotionTrack(FPS, **values)


def _speech(n: int) -> MotionTrack:
    t = np.arange(n) / FPS
    return _track(
        n, mouth_open=0.5 + 0.5 * np.sin(7 * t), blink=(np.arange(n) % 5 == 2).astype(float),
        yaw=6 * np.sin(t), pitch=2 * np.cos(t), roll=-3 * np.sin(2 * t),
    )


def test_output_shape_dtype_and_size(renderer, portrait, weights):
    frames = renderer.render(portrait, _speech(6))
    assert frames.shape == (6, 256, 256, 3) and frames.dtype == np.uint8
    assert renderer.render(portrait, MotionTrack.empty(FPS)).shape == (0, 256, 256, 3)
    small = LivePortraitRenderer(weights_dir=weights, config=TINY, output_size=128)
    assert small.render(portrait, _speech(2)).shape == (2, 128, 128, 3)


def test_render_is_deterministic_and_cached_per_portrait(renderer, portrait, weights):
    motion = _speech(5)
    first = renderer.render(portrait, motion)
    assert renderer.prepare(portrait) is renderer.prepare(portrait)  # prepared once per portrait.key
    again = LivePortraitRenderer(weights_dir=weights, config=TINY, batch_size=4).render(portrait, motion)
    np.testing.assert_array_equal(first, again)


def test_pixels_outside_the_paste_mask_are_the_portrait(renderer, portrait):
    frames = renderer.render(portrait, _speech(4))
    mask = renderer.prepare(portrait).mask
    outside, solid = mask == 0, mask > 0.99
    assert outside.mean() > 0.05 and solid.mean() > 0.2  # both regions are substantial
    for frame in frames:
        np.testing.assert_array_equal(frame[outside], portrait.image[outside])
        assert np.abs(frame[solid].astype(int) - portrait.image[solid]).mean() > 5  # the face is rendered
    # The mask eases in: no hard step between pasted and untouched pixels.
    assert np.abs(np.diff(mask, axis=0)).max() < 0.2 and np.abs(np.diff(mask, axis=1)).max() < 0.2


def test_an_identity_render_pastes_back_onto_the_portrait(weights, portrait, monkeypatch):
    # A model that returns the source crop unchanged must give back the portrait: this pins the crop
    # transform, the resize and the inverse warp to each other (random weights cannot show misalignment).
    renderer = LivePortraitRenderer(weights_dir=weights, config=TINY)
    native = renderer.model.output_size
    to_native = face_crop_transform(portrait.landmarks.astype(np.float64), native)
    crop = cv2.warpAffine(portrait.image, to_native, (native, native), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    monkeypatch.setattr(renderer.model, "animate_batch", lambda _src, ctrl: np.stack([crop] * len(ctrl)))
    frame = renderer.render(portrait, _speech(1))[0].astype(int)
    inside = renderer.prepare(portrait).mask > 0.5
    errors = {
        (dx, dy): np.abs(np.roll(frame, (dy, dx), axis=(0, 1)) - portrait.image)[inside].mean()
        for dx, dy in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
    }
    # Only the round trip through the 128 px crop blurs it, and any shift makes it worse.
    assert errors[0, 0] < 8 and errors[0, 0] == min(errors.values()), errors


def test_motion_maps_to_controls(renderer, portrait):
    prepared = renderer.prepare(portrait)
    controls = renderer.controls(
        prepared, _track(3, mouth_open=np.array([0.0, 1.0, 2.0]), blink=np.array([0.0, 1.0, 0.5]),
                         yaw=np.array([4.0, 0, 0]), pitch=np.array([0, -2.0, 0]), roll=np.array([0, 0, 3.0]))
    )
    wide = renderer.max_lip_ratio
    assert [c.lip_open for c in controls] == pytest.approx([0.0, wide, wide])  # clipped at mouth_open 1
    open_ratio = float(np.mean(eye_ratios(portrait.landmarks)))
    assert 0.15 < open_ratio < 0.5  # the astronaut's eyes are open
    assert [c.eye_open for c in controls] == pytest.approx([open_ratio, 0.0, open_ratio / 2])
    poses = [(c.yaw, c.pitch, c.roll) for c in controls]
    assert poses == [(4.0, 0.0, 0.0), (0.0, -2.0, 0.0), (0.0, 0.0, 3.0)]


def test_face_crop_is_upright_centred_and_follows_roll(portrait):
    def crop_coords(landmarks: np.ndarray) -> np.ndarray:
        matrix = face_crop_transform(landmarks, 256)
        return landmarks @ matrix[:, :2].T + matrix[:, 2]

    upright = crop_coords(portrait.landmarks.astype(np.float64))
    eyes = (upright[36:42].mean(axis=0) + upright[42:48].mean(axis=0)) / 2
    assert abs(upright[48:68].mean(axis=0)[0] - eyes[0]) < 1e-6  # mouth straight below the eyes
    assert abs((upright[:, 0].min() + upright[:, 0].max()) / 2 - 127.5) < 1e-6  # centred across
    assert np.ptp(upright, axis=0).max() == pytest.approx(256 / 2.3)  # LivePortrait's crop scale
    # The same face rolled by 30 degrees and moved lands on the same crop coordinates.
    angle = np.radians(30)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rolled = crop_coords(portrait.landmarks.astype(np.float64) @ rot.T + (40, -15))
    np.testing.assert_allclose(rolled, upright, atol=1e-6)


def test_mask_template_is_zero_at_the_crop_border():
    mask = paste_mask_template(200)
    assert mask.max() == 1.0
    border = np.concatenate([mask[:8].ravel(), mask[-8:].ravel(), mask[:, :8].ravel(), mask[:, -8:].ravel()])
    assert border.max() == 0.0


def test_missing_weights_raise_at_construction(tmp_path):
    with pytest.raises(ModelUnavailableError) as err:
        LivePortraitRenderer(weights_dir=tmp_path / "nothing", config=TINY)
    assert FETCH_COMMAND in str(err.value) and "warping_module.pth" in str(err.value)


def test_registry_builds_it_and_the_fetch_tool_knows_its_files(weights):
    engine = registry.build("avatar", "liveportrait", {"weights_dir": str(weights), "config": TINY})
    assert isinstance(engine, LivePortraitRenderer)
    fetched = {f.path for f in REGISTRY["liveportrait"].files}
    needed = {p.relative_to("root").as_posix() for p in weight_files("root")}
    assert fetched == needed
