"""Hyper-parameters of the released LivePortrait (human) networks.

The defaults are the released model (KwaiVGI/LivePortrait ``src/config/models.yaml``); every field
changes parameter shapes, so only the defaults load the official checkpoints. Smaller configs exist
for fast tests of the same code paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NUM_KP = 21  # implicit 3-D keypoints; the retargeting MLP sizes (63 = 21 * 3) depend on it


@dataclass(frozen=True)
class AppearanceConfig:
    image_channel: int = 3
    block_expansion: int = 64
    num_down_blocks: int = 2
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6


@dataclass(frozen=True)
class MotionConfig:
    """ConvNeXtV2 backbone (tiny by default) plus the keypoint / pose heads."""

    num_bins: int = 66
    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)


@dataclass(frozen=True)
class DenseMotionConfig:
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4


@dataclass(frozen=True)
class WarpingConfig:
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    estimate_occlusion_map: bool = True
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)


@dataclass(frozen=True)
class SpadeConfig:
    upscale: int = 2
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    out_channels: int = 64
    modulation_hidden: int = 128  # width of each SPADE's shared conv (fixed in the release)


@dataclass(frozen=True)
class MLPConfig:
    input_size: int
    hidden_sizes: tuple[int, ...]
    output_size: int


@dataclass(frozen=True)
class LivePortraitConfig:
    input_size: int = 256  # square RGB crop fed to the appearance and motion extractors
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    warping: WarpingConfig = field(default_factory=WarpingConfig)
    spade: SpadeConfig = field(default_factory=SpadeConfig)
    # stitching: [x_s, x_d] -> delta keypoints + (tx, ty)
    stitching: MLPConfig = field(
        default_factory=lambda: MLPConfig(2 * NUM_KP * 3, (128, 128, 64), NUM_KP * 3 + 2)
    )
    # lip: [x_s, source lip ratio, target lip ratio] -> delta keypoints
    lip: MLPConfig = field(default_factory=lambda: MLPConfig(NUM_KP * 3 + 2, (128, 128, 64), NUM_KP * 3))
    # eye: [x_s, source left/right eye ratios, target eye ratio] -> delta keypoints
    eye: MLPConfig = field(
        default_factory=lambda: MLPConfig(NUM_KP * 3 + 3, (256, 256, 128, 128, 64), NUM_KP * 3)
    )
