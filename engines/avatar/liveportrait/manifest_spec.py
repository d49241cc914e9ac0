"""Expected checkpoint keys and shapes, spelled out from the published architecture and config.

This is deliberately independent of the ``nn.Module`` code: it lists what the released files hold
(per KwaiVGI/LivePortrait ``src/config/models.yaml`` and its module definitions), and the tests
check the modules against it. ``python -m engines.avatar.liveportrait.manifest_spec`` rewrites
``manifest.json``.
"""

from __future__ import annotations

import json
import re
from itertools import pairwise
from pathlib import Path

Shape = list[int]
Entries = dict[str, Shape]

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
K = 21  # implicit keypoints


def _conv(
    name: str,
    cin: int,
    cout: int,
    k: int | tuple[int, ...],
    *,
    dims: int = 2,
    bias: bool = True,
    groups: int = 1,
) -> Entries:
    ks = list(k) if isinstance(k, tuple) else [k] * dims
    out = {f"{name}.weight": [cout, cin // groups, *ks]}
    if bias:
        out[f"{name}.bias"] = [cout]
    return out


def _linear(name: str, cin: int, cout: int) -> Entries:
    return {f"{name}.weight": [cout, cin], f"{name}.bias": [cout]}


def _bn(name: str, c: int) -> Entries:
    return {
        f"{name}.weight": [c],
        f"{name}.bias": [c],
        f"{name}.running_mean": [c],
        f"{name}.running_var": [c],
        f"{name}.num_batches_tracked": [],
    }


def _affine(name: str, c: int) -> Entries:
    return {f"{name}.weight": [c], f"{name}.bias": [c]}


def _spectral_conv(name: str, cin: int, cout: int, k: int, *, bias: bool = True) -> Entries:
    # torch.nn.utils.spectral_norm keeps weight_orig plus the power-iteration vectors u (out) and v (in*k*k).
    out = {
        f"{name}.weight_orig": [cout, cin, k, k],
        f"{name}.weight_u": [cout],
        f"{name}.weight_v": [cin * k * k],
    }
    if bias:
        out[f"{name}.bias"] = [cout]
    return out


def appearance_feature_extractor() -> Entries:
    e: Entries = {}
    e |= _conv("first.conv", 3, 64, 3) | _bn("first.norm", 64)
    for i, (cin, cout) in enumerate([(64, 128), (128, 256)]):
        e |= _conv(f"down_blocks.{i}.conv", cin, cout, 3) | _bn(f"down_blocks.{i}.norm", cout)
    e |= _conv("second", 256, 512, 1)
    for i in range(6):
        p = f"resblocks_3d.3dr{i}"
        e |= _conv(f"{p}.conv1", 32, 32, 3, dims=3) | _conv(f"{p}.conv2", 32, 32, 3, dims=3)
        e |= _bn(f"{p}.norm1", 32) | _bn(f"{p}.norm2", 32)
    return e


def motion_extractor() -> Entries:
    dims, depths = [96, 192, 384, 768], [3, 3, 9, 3]
    e: Entries = {}
    d = "detector"
    e |= _conv(f"{d}.downsample_layers.0.0", 3, 96, 4) | _affine(f"{d}.downsample_layers.0.1", 96)
    for i in range(1, 4):
        e |= _affine(f"{d}.downsample_layers.{i}.0", dims[i - 1])
        e |= _conv(f"{d}.downsample_layers.{i}.1", dims[i - 1], dims[i], 2)
    for s, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
        for j in range(depth):
            p = f"{d}.stages.{s}.{j}"
            e |= _conv(f"{p}.dwconv", dim, dim, 7, groups=dim) | _affine(f"{p}.norm", dim)
            e |= _linear(f"{p}.pwconv1", dim, 4 * dim)
            e |= {f"{p}.grn.gamma": [1, 1, 1, 4 * dim], f"{p}.grn.beta": [1, 1, 1, 4 * dim]}
            e |= _linear(f"{p}.pwconv2", 4 * dim, dim)
    e |= _affine(f"{d}.norm", 768)
    heads = {
        "fc_kp": 3 * K,
        "fc_scale": 1,
        "fc_pitch": 66,
        "fc_yaw": 66,
        "fc_roll": 66,
        "fc_t": 3,
        "fc_exp": 3 * K,
    }
    for name, n in heads.items():
        e |= _linear(f"{d}.{name}", 768, n)
    return e


def warping_module() -> Entries:
    e: Entries = {}
    p = "dense_motion_network"
    in_ch = (K + 1) * (4 + 1)  # 110: per flow a heatmap + 4 compressed feature channels
    widths = [in_ch, 64, 128, 256, 512, 1024]  # hourglass: block_expansion 32, 5 levels, cap 1024
    for i in range(5):
        e |= _conv(f"{p}.hourglass.encoder.down_blocks.{i}.conv", widths[i], widths[i + 1], 3, dims=3)
        e |= _bn(f"{p}.hourglass.encoder.down_blocks.{i}.norm", widths[i + 1])
    ups = [(1024, 512), (1024, 256), (512, 128), (256, 64), (128, 32)]
    for i, (cin, cout) in enumerate(ups):
        e |= _conv(f"{p}.hourglass.decoder.up_blocks.{i}.conv", cin, cout, 3, dims=3)
        e |= _bn(f"{p}.hourglass.decoder.up_blocks.{i}.norm", cout)
    out = 32 + in_ch  # 142
    e |= _conv(f"{p}.hourglass.decoder.conv", out, out, 3, dims=3) | _bn(f"{p}.hourglass.decoder.norm", out)
    e |= _conv(f"{p}.mask", out, K + 1, 7, dims=3)
    e |= _conv(f"{p}.compress", 32, 4, 1, dims=3) | _bn(f"{p}.norm", 4)
    e |= _conv(f"{p}.occlusion", out * 16, 1, 7)
    e |= _conv("third.conv", 512, 256, 3) | _bn("third.norm", 256)
    e |= _conv("fourth", 256, 256, 1)
    return e


def _spade(name: str, c: int) -> Entries:
    return (
        _conv(f"{name}.mlp_shared.0", 256, 128, 3)
        | _conv(f"{name}.mlp_gamma", 128, c, 3)
        | _conv(f"{name}.mlp_beta", 128, c, 3)
    )


def _spade_block(name: str, fin: int, fout: int) -> Entries:
    mid = min(fin, fout)
    e = _spectral_conv(f"{name}.conv_0", fin, mid, 3) | _spectral_conv(f"{name}.conv_1", mid, fout, 3)
    e |= _spade(f"{name}.norm_0", fin) | _spade(f"{name}.norm_1", mid)
    if fin != fout:
        e |= _spectral_conv(f"{name}.conv_s", fin, fout, 1, bias=False) | _spade(f"{name}.norm_s", fin)
    return e


def spade_generator() -> Entries:
    e = _conv("fc", 256, 512, 3)
    for i in range(6):
        e |= _spade_block(f"G_middle_{i}", 512, 512)
    e |= _spade_block("up_0", 512, 256) | _spade_block("up_1", 256, 64)
    e |= _conv("conv_img.0", 64, 12, 3)  # 3 * 2**2 channels, then PixelShuffle(2)
    return e


def _mlp(sizes: list[int]) -> Entries:
    e: Entries = {}
    for i, (cin, cout) in enumerate(pairwise(sizes)):
        e |= _linear(f"module.mlp.{2 * i}", cin, cout)  # ReLUs sit at the odd indices; DDP-saved ("module.")
    return e


def retargeting_module() -> dict[str, Entries]:
    return {
        "retarget_shoulder": _mlp([126, 128, 128, 64, 65]),
        "retarget_mouth": _mlp([65, 128, 128, 64, 63]),
        "retarget_eye": _mlp([66, 256, 256, 128, 128, 64, 63]),
    }


def build_manifest() -> dict:
    return {
        "source": "KwaiVGI/LivePortrait src/config/models.yaml + src/modules (human model)",
        "files": {
            "liveportrait/base_models/appearance_feature_extractor.pth": {
                "format": "state_dict",
                "keys": appearance_feature_extractor(),
            },
            "liveportrait/base_models/motion_extractor.pth": {
                "format": "state_dict",
                "keys": motion_extractor(),
            },
            "liveportrait/base_models/warping_module.pth": {"format": "state_dict", "keys": warping_module()},
            "liveportrait/base_models/spade_generator.pth": {
                "format": "state_dict",
                "keys": spade_generator(),
            },
            "liveportrait/retargeting_models/stitching_retargeting_module.pth": {
                "format": "dict of state_dicts",
                "note": "top-level key -> network; inner keys have a DDP 'module.' prefix, loaders strip it",
                "networks": {
                    "retarget_shoulder": "stitching",
                    "retarget_mouth": "lip",
                    "retarget_eye": "eye",
                },
                "keys": retargeting_module(),
            },
        },
    }


def _inline_shape(match: re.Match[str]) -> str:
    return "[" + ", ".join(n.strip() for n in match.group(1).split(",") if n.strip()) + "]"


def dumps(manifest: dict) -> str:
    """JSON with one key per line: each shape stays on the line of its key."""
    return re.sub(r"\[([-\d,\s]*)\]", _inline_shape, json.dumps(manifest, indent=1)) + "\n"


if __name__ == "__main__":
    MANIFEST_PATH.write_text(dumps(build_manifest()))
    print(f"wrote {MANIFEST_PATH}")
