"""LivePortrait networks: strict loading at the release sizes, keypoint math, retargeting plumbing.

Strict-load and manifest tests use the release architecture (~520 MB of random weights). Rendering
tests use a narrow config (same code paths, far fewer channels) because one release-size frame costs
4.5-10 s on a 2-core CPU; a meta-device pass checks the release-size shapes end to end instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.avatar.liveportrait import (
    FETCH_COMMAND,
    FrameControls,
    LivePortraitConfig,
    LivePortraitModel,
    LivePortraitNetworks,
    LivePortraitRuntime,
    check_weights,
    load_networks,
    load_runtime,
    make_runtime,
    save_networks,
    weight_files,
)
from engines.avatar.liveportrait.config import (
    AppearanceConfig,
    DenseMotionConfig,
    MotionConfig,
    SpadeConfig,
    WarpingConfig,
)
from engines.avatar.liveportrait.keypoints import (
    bins_to_degrees,
    rotation_matrix,
    stitch,
    transform_keypoints,
)
from engines.avatar.liveportrait.manifest_spec import MANIFEST_PATH, build_manifest
from engines.avatar.liveportrait.weights import BASE_FILES, RETARGETING_FILE, RETARGETING_KEYS
from engines.errors import InvalidImageError, ModelUnavailableError

# Published file sizes (MB) of the released checkpoints (shared/MODELS.md), for a size sanity check.
PUBLISHED_MB = {
    "appearance_feature_extractor": 3.4,
    "motion_extractor": 113,
    "warping_module": 182,
    "spade_generator": 222,
}

TINY = LivePortraitConfig(
    input_size=64,
    appearance=AppearanceConfig(
        block_expansion=8, max_features=64, reshape_channel=8, reshape_depth=8, num_resblocks=1
    ),
    motion=MotionConfig(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
    warping=WarpingConfig(
        block_expansion=8,
        max_features=64,
        reshape_channel=8,
        dense_motion=DenseMotionConfig(
            block_expansion=8, max_features=32, num_blocks=2, reshape_depth=8, compress=1
        ),
    ),
    spade=SpadeConfig(block_expansion=8, max_features=64, out_channels=8, modulation_hidden=8),
)


@pytest.fixture(autouse=True)
def _one_thread():
    # The machine is shared: keep each test on one core.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def release_nets() -> LivePortraitNetworks:
    torch.manual_seed(0)
    return LivePortraitNetworks().eval()


@pytest.fixture(scope="module")
def release_root(release_nets, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lp-release")
    save_networks(release_nets, root)
    return root


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    nets = LivePortraitNetworks(TINY)
    # Non-trivial BatchNorm statistics, so eval-mode outputs depend on them.
    for module in nets.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    root = tmp_path_factory.mktemp("lp-tiny")
    save_networks(nets, root)
    return root


@pytest.fixture()
def tiny_model(tiny_root) -> LivePortraitModel:
    return LivePortraitModel.from_weights(tiny_root, config=TINY, output_size=96, batch_size=3)


def _portrait() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    face = ((xx - 128) ** 2 + (yy - 120) ** 2 < 70**2)[..., None] * np.array([200, 160, 140])
    return np.clip(face + rng.integers(0, 40, (256, 256, 3)), 0, 255).astype(np.uint8)


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state.items()}


# --- release sizes: manifest, strict loading -------------------------------------------------------


def test_manifest_file_is_current():
    assert json.loads(MANIFEST_PATH.read_text()) == build_manifest()


def test_state_dicts_match_manifest_exactly(release_nets):
    files = json.loads(MANIFEST_PATH.read_text())["files"]
    for name, rel in BASE_FILES.items():
        assert _shapes(getattr(release_nets, name).state_dict()) == files[rel]["keys"], name
    retarget = files[RETARGETING_FILE]
    assert set(retarget["keys"]) == set(RETARGETING_KEYS.values())
    for attr, key in RETARGETING_KEYS.items():
        assert retarget["networks"][key] == attr
        expected = {k.removeprefix("module."): v for k, v in retarget["keys"][key].items()}
        assert _shapes(getattr(release_nets, attr).state_dict()) == expected, key


def test_manifest_sizes_match_published_file_sizes():
    # An independent check of the architecture: float32 bytes vs the released files' sizes.
    files = build_manifest()["files"]
    for name, mb in PUBLISHED_MB.items():
        n = sum(math.prod(shape) for shape in files[BASE_FILES[name]]["keys"].values())
        assert abs(4 * n / 1e6 - mb) / mb < 0.02, name


def test_release_weights_load_strict(release_nets, release_root):
    loaded = load_networks(release_root)
    expected, got = release_nets.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    saved = torch.load(release_root / RETARGETING_FILE, weights_only=True)
    assert set(saved) == set(RETARGETING_KEYS.values())
    assert all(k.startswith("module.mlp.") for k in saved["retarget_eye"])  # the released key form


def _layout_without(root: Path, tmp_path: Path, skip: str) -> Path:
    for src in weight_files(root):
        rel = src.relative_to(root)
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.as_posix() != skip:
            (tmp_path / rel).symlink_to(src)
    return tmp_path


def test_missing_file_raises_with_name_and_fetch_command(release_root, tmp_path):
    root = _layout_without(release_root, tmp_path, BASE_FILES["warping_module"])
    with pytest.raises(ModelUnavailableError) as err:
        load_networks(root)
    message = str(err.value)
    assert "warping_module.pth" in message and FETCH_COMMAND in message
    assert "spade_generator.pth" not in message
    with pytest.raises(ModelUnavailableError, match=r"stitching_retargeting_module\.pth"):
        check_weights(tmp_path / "empty")


def test_one_wrong_shape_fails_strict_load(release_root, tmp_path):
    rel = BASE_FILES["appearance_feature_extractor"]
    root = _layout_without(release_root, tmp_path, rel)
    state = torch.load(release_root / rel, weights_only=True)
    state["second.bias"] = torch.zeros(511)  # 512 in the release
    torch.save(state, root / rel)
    with pytest.raises(ModelUnavailableError, match=r"second\.bias"):
        load_networks(root)


def test_unexpected_key_fails_strict_load(tiny_root, tmp_path):
    root = _layout_without(tiny_root, tmp_path, RETARGETING_FILE)
    bundle = torch.load(tiny_root / RETARGETING_FILE, weights_only=True)
    bundle["retarget_eye"]["module.mlp.99.weight"] = torch.zeros(1)
    torch.save(bundle, root / RETARGETING_FILE)
    with pytest.raises(ModelUnavailableError, match=r"(?s)retarget_eye.*mlp\.99\.weight"):
        load_networks(root, TINY)


def test_release_shapes_end_to_end_on_meta_device():
    with torch.device("meta"):
        nets = LivePortraitNetworks()
        image = torch.empty(2, 3, 256, 256)
        kp = torch.empty(2, 21, 3)
    volume = nets.appearance_feature_extractor(image)
    assert volume.shape == (2, 32, 16, 64, 64)
    heads = nets.motion_extractor(image)
    assert [tuple(h.shape) for h in heads] == [(2, 66), (2, 66), (2, 66), (2, 3), (2, 63), (2, 1), (2, 63)]
    feature = nets.warping_module(volume, kp_source=kp, kp_driving=kp)
    assert feature.shape == (2, 256, 64, 64)
    assert nets.spade_generator(feature).shape == (2, 3, 512, 512)


def test_release_extractors_run_on_cpu(release_nets):
    image = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        volume = release_nets.appearance_feature_extractor(image)
        heads = release_nets.motion_extractor(image)
    assert volume.shape == (1, 32, 16, 64, 64) and torch.isfinite(volume).all()
    assert all(torch.isfinite(h).all() for h in heads)


def test_fp16_and_compile_are_cuda_only():
    runtime = make_runtime(LivePortraitNetworks(TINY), device="cpu", fp16=True, compile=True)
    assert runtime.fp16 is False
    assert runtime.warp is runtime.networks.warping_module


# --- keypoint math ---------------------------------------------------------------------------------


def _deg(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_zero_angles_give_identity():
    assert torch.allclose(rotation_matrix(_deg(0), _deg(0), _deg(0)), torch.eye(3)[None], atol=1e-7)


def test_yaw_rotates_about_vertical_axis():
    rot = rotation_matrix(_deg(0), _deg(30), _deg(0))
    x = torch.tensor([[1.0, 0.0, 0.0]]) @ rot[0]
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    assert torch.allclose(x, torch.tensor([[c, 0.0, -s]]), atol=1e-6)
    assert torch.allclose(torch.tensor([[0.0, 1.0, 0.0]]) @ rot[0], torch.tensor([[0.0, 1.0, 0.0]]))


def test_rotation_composes_pitch_then_yaw_then_roll():
    p, y, r = 10.0, -25.0, 40.0
    rot = rotation_matrix(_deg(p), _deg(y), _deg(r))[0]
    rx = rotation_matrix(_deg(p), _deg(0), _deg(0))[0]
    ry = rotation_matrix(_deg(0), _deg(y), _deg(0))[0]
    rz = rotation_matrix(_deg(0), _deg(0), _deg(r))[0]
    # Row vectors: x @ R applies pitch first, then yaw, then roll.
    assert torch.allclose(rot, rx @ ry @ rz, atol=1e-6)
    assert torch.allclose(rot @ rot.T, torch.eye(3), atol=1e-6)
    assert torch.det(rot).item() == pytest.approx(1.0, abs=1e-6)


def test_pose_bins_to_degrees():
    assert bins_to_degrees(torch.zeros(1, 66)).item() == pytest.approx(0.0, abs=1e-4)  # mean bin 32.5
    peaked = torch.full((1, 66), -1e4)
    peaked[0, 40] = 0.0
    assert bins_to_degrees(peaked).item() == pytest.approx(40 * 3 - 97.5)


def test_transform_keypoints_scales_rotates_and_drops_tz():
    kp = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.5]]])
    exp = torch.full_like(kp, 0.1)
    rot = rotation_matrix(_deg(0), _deg(90), _deg(0))
    out = transform_keypoints(kp, rot, exp, torch.tensor([[2.0]]), torch.tensor([[0.3, -0.2, 9.0]]))
    expected = 2.0 * (kp @ rot + exp) + torch.tensor([0.3, -0.2, 0.0])
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(out[0, 0], torch.tensor([0.5, -0.0, -1.8]), atol=1e-6)


def test_stitch_adds_per_keypoint_delta_and_xy_shift():
    mlp = LivePortraitNetworks(TINY).stitching
    for layer in mlp.mlp:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    last = mlp.mlp[-1]
    with torch.no_grad():
        last.bias[5] = 0.25  # keypoint 1, z
        last.bias[63:65] = torch.tensor([0.1, -0.2])  # global tx, ty
    x = torch.rand(1, 21, 3)
    out = stitch(mlp, x, x)
    expected = x.clone()
    expected[..., 0] += 0.1
    expected[..., 1] -= 0.2
    expected[0, 1, 2] += 0.25
    assert torch.allclose(out, expected, atol=1e-6)


# --- retargeting through the model -----------------------------------------------------------------

# Two keypoints picked for the test; the lip MLP below moves them apart vertically (+y is down).
UPPER, LOWER = 19, 20


def _set_known_retarget_mlp(
    mlp: torch.nn.Module, source_idx: list[int], target_idx: int, gain: float
) -> None:
    """Make ``mlp`` compute: y(UPPER) -= g * d, y(LOWER) += g * d, with d = target - mean(source)."""
    linears = [m for m in mlp.mlp if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer in linears:
            layer.weight.zero_()
            layer.bias.zero_()
        first = linears[0].weight
        first[0, target_idx], first[1, target_idx] = 1.0, -1.0  # h0 = relu(d), h1 = relu(-d)
        for i in source_idx:
            first[0, i], first[1, i] = -1.0 / len(source_idx), 1.0 / len(source_idx)
        for layer in linears[1:-1]:  # pass h0, h1 through the hidden ReLUs unchanged
            layer.weight[0, 0] = layer.weight[1, 1] = 1.0
        out = linears[-1].weight
        out[3 * UPPER + 1, 0], out[3 * UPPER + 1, 1] = -gain, gain
        out[3 * LOWER + 1, 0], out[3 * LOWER + 1, 1] = gain, -gain


def _gap(model: LivePortraitModel, source, **controls) -> tuple[float, torch.Tensor]:
    kp = model.driving_keypoints(source, [FrameControls(**controls)])[0]
    return (kp[LOWER, 1] - kp[UPPER, 1]).item(), kp


def test_lip_ratio_moves_exactly_the_expected_keypoints(tiny_model):
    tiny_model.stitching = False
    _set_known_retarget_mlp(tiny_model.nets.lip, source_idx=[63], target_idx=64, gain=0.5)
    source = tiny_model.prepare_source(_portrait(), lip_ratio=0.1)
    base_gap, base = _gap(tiny_model, source)
    assert torch.allclose(base, source.x_s[0], atol=1e-5)  # no controls: driving == source keypoints
    small_gap, _ = _gap(tiny_model, source, lip_open=0.2)
    large_gap, large = _gap(tiny_model, source, lip_open=0.8)
    assert large_gap > small_gap > base_gap
    assert large_gap - small_gap == pytest.approx(2 * 0.5 * 0.6, abs=1e-4)
    changed = (large - base).abs() > 1e-6
    assert changed.nonzero().tolist() == [[UPPER, 1], [LOWER, 1]]


def test_eye_ratio_uses_both_source_eyes_and_the_target(tiny_model):
    tiny_model.stitching = False
    _set_known_retarget_mlp(tiny_model.nets.eye, source_idx=[63, 64], target_idx=65, gain=0.5)
    source = tiny_model.prepare_source(_portrait(), eye_ratio=(0.3, 0.1))  # mean 0.2
    base_gap, base = _gap(tiny_model, source)
    same_gap, _ = _gap(tiny_model, source, eye_open=0.2)  # target == source mean: no movement
    open_gap, opened = _gap(tiny_model, source, eye_open=0.6)
    closed_gap, _ = _gap(tiny_model, source, eye_open=0.0)
    assert same_gap == pytest.approx(base_gap, abs=1e-5)
    assert closed_gap < base_gap < open_gap
    assert open_gap - base_gap == pytest.approx(2 * 0.5 * 0.4, abs=1e-4)
    assert ((opened - base).abs() > 1e-6).nonzero().tolist() == [[UPPER, 1], [LOWER, 1]]


def test_batched_controls_match_per_frame(tiny_model):
    source = tiny_model.prepare_source(_portrait())
    controls = [FrameControls(lip_open=0.4), FrameControls(yaw=12.0), FrameControls(eye_open=0.1, roll=-5.0)]
    batched = tiny_model.driving_keypoints(source, controls)
    single = torch.cat([tiny_model.driving_keypoints(source, [c]) for c in controls])
    assert torch.allclose(batched, single, atol=1e-6)


# --- rendering -------------------------------------------------------------------------------------


def test_animate_returns_configured_size_uint8(tiny_model):
    source = tiny_model.prepare_source(_portrait())
    assert source.feature_volume.shape == (1, 8, 8, 16, 16)
    frame = tiny_model.animate(source, FrameControls(lip_open=0.5, eye_open=0.3, yaw=10.0))
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
    assert frame.std() > 0
    frames = tiny_model.animate_batch(source, [FrameControls(yaw=float(a)) for a in (-20, 0, 20, 0, 5)])
    assert frames.shape == (5, 96, 96, 3) and frames.dtype == np.uint8
    assert np.abs(frames[1].astype(int) - frames[3]).max() <= 1  # same controls, different batch slot
    assert not np.array_equal(frames[0], frames[2])  # the head pose reaches the image


def test_animate_is_deterministic(tiny_root):
    controls = [FrameControls(lip_open=0.3, pitch=4.0), FrameControls(eye_open=0.1, yaw=-8.0)]
    outputs = []
    for _ in range(2):
        model = LivePortraitModel(load_runtime(tiny_root, config=TINY), output_size=64)
        source = model.prepare_source(_portrait())
        outputs.append(model.animate_batch(source, controls))
    assert np.array_equal(outputs[0], outputs[1])


def test_fp16_autocast_path_stays_close_to_fp32():
    # CUDA-only in production; CPU float16 autocast exercises the same dtype plumbing here
    # (at a 32 px input: CPU half-precision kernels are slow).
    torch.manual_seed(2)
    nets = LivePortraitNetworks(replace(TINY, input_size=32)).eval()
    dtypes: list[torch.dtype] = []
    nets.spade_generator.fc.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    frames = []
    for fp16 in (False, True):
        runtime = LivePortraitRuntime(
            nets, torch.device("cpu"), fp16, nets.warping_module, nets.spade_generator
        )
        model = LivePortraitModel(runtime, output_size=64)
        frames.append(model.animate(model.prepare_source(_portrait()), FrameControls(lip_open=0.4, yaw=6.0)))
    assert dtypes == [torch.float32, torch.float16]
    assert np.abs(frames[0].astype(int) - frames[1]).max() <= 4


def test_source_must_be_rgb_uint8(tiny_model):
    with pytest.raises(InvalidImageError):
        tiny_model.prepare_source(np.zeros((256, 256), np.uint8))
    with pytest.raises(InvalidImageError):
        tiny_model.prepare_source(np.zeros((256, 256, 3), np.float32))
