"""Warping module (W): keypoint motion -> dense 3-D flow + occlusion, applied to the feature volume."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBlock2d, Hourglass
from .config import NUM_KP, AppearanceConfig, WarpingConfig

KP_VARIANCE = 0.01  # width of the keypoint Gaussians, in normalised [-1, 1] units


def coordinate_grid(d: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """d x h x w x 3 grid of normalised (x, y, z) in [-1, 1], the order ``grid_sample`` expects."""
    axes = [torch.linspace(-1.0, 1.0, n, dtype=like.dtype, device=like.device) for n in (d, h, w)]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """B x K x 3 keypoints -> B x K x d x h x w Gaussian heatmaps on ``grid``."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * diff.pow(2).sum(-1) / KP_VARIANCE)


class DenseMotion(NamedTuple):
    deformation: torch.Tensor  # B x d x h x w x 3 sampling grid into the source volume
    occlusion_map: torch.Tensor | None  # B x 1 x h x w in (0, 1)


class DenseMotionNetwork(nn.Module):
    """Blends K+1 candidate flows (one per keypoint, plus identity) with predicted soft masks."""

    def __init__(self, cfg: WarpingConfig, feature_channels: int) -> None:
        super().__init__()
        dm = cfg.dense_motion
        in_ch = (NUM_KP + 1) * (dm.compress + 1)  # per flow: heatmap + compressed deformed features
        self.hourglass = Hourglass(dm.block_expansion, in_ch, dm.num_blocks, dm.max_features)
        out_ch = self.hourglass.out_channels
        self.mask = nn.Conv3d(out_ch, NUM_KP + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channels, dm.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(dm.compress)
        self.occlusion = (
            nn.Conv2d(out_ch * dm.reshape_depth, 1, kernel_size=7, padding=3)
            if cfg.estimate_occlusion_map
            else None
        )

    def forward(self, volume: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> DenseMotion:
        feat = F.relu(self.norm(self.compress(volume)))  # B x c x d x h x w
        b, c, d, h, w = feat.shape
        k1 = NUM_KP + 1
        grid = coordinate_grid(d, h, w, kp_driving)  # keypoint precision, also under fp16 autocast
        # Candidate flow k maps a driving-space point to source space by the k-th keypoint offset.
        offsets = (kp_source - kp_driving)[:, :, None, None, None, :]
        flows = torch.cat([grid.expand(b, 1, d, h, w, 3), grid[None, None] + offsets], dim=1)
        deformed = F.grid_sample(
            feat.unsqueeze(1).expand(b, k1, c, d, h, w).reshape(b * k1, c, d, h, w),
            flows.reshape(b * k1, d, h, w, 3),
            align_corners=False,
        ).view(b, k1, c, d, h, w)
        heat = keypoint_gaussians(kp_driving, grid) - keypoint_gaussians(kp_source, grid)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1)
        prediction = self.hourglass(torch.cat([heat.unsqueeze(2), deformed], dim=2).view(b, -1, d, h, w))

        weights = F.softmax(self.mask(prediction), dim=1)  # B x (K+1) x d x h x w
        deformation = (flows * weights.unsqueeze(-1)).sum(dim=1)
        occlusion = None
        if self.occlusion is not None:
            occlusion = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))
        return DenseMotion(deformation, occlusion)


class WarpingNetwork(nn.Module):
    """Warps the source volume to the driving keypoints; returns B x 256 x 64 x 64 decoder input."""

    def __init__(self, cfg: WarpingConfig, appearance: AppearanceConfig) -> None:
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(cfg, cfg.reshape_channel)
        width = cfg.block_expansion * 2**cfg.num_down_blocks
        in_ch = appearance.reshape_channel * appearance.reshape_depth
        if in_ch != cfg.max_features:
            raise ValueError(
                f"feature volume has {in_ch} channels once flattened, expected {cfg.max_features}"
            )
        self.third = ConvBlock2d(cfg.max_features, width, leaky=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def forward(
        self, volume: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> torch.Tensor:
        motion = self.dense_motion_network(volume, kp_driving, kp_source)
        warped = F.grid_sample(volume, motion.deformation, align_corners=False)
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.view(b, c * d, h, w)))
        if motion.occlusion_map is not None:
            out = out * motion.occlusion_map
        return out
