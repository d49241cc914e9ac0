"""Motion extractor (M): ConvNeXtV2 backbone regressing keypoints, head pose, expression and scale."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import GRN, LayerNorm2d
from .config import NUM_KP, MotionConfig


class MotionOutput(NamedTuple):
    """Raw head outputs; pitch/yaw/roll are logits over angle bins (see ``keypoints.bins_to_degrees``)."""

    pitch: torch.Tensor  # B x num_bins
    yaw: torch.Tensor  # B x num_bins
    roll: torch.Tensor  # B x num_bins
    t: torch.Tensor  # B x 3
    exp: torch.Tensor  # B x (NUM_KP * 3), expression deformation
    scale: torch.Tensor  # B x 1
    kp: torch.Tensor  # B x (NUM_KP * 3), canonical keypoints


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv -> LayerNorm -> MLP with GRN, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # the MLP runs channels-last
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2Detector(nn.Module):
    def __init__(self, cfg: MotionConfig) -> None:
        super().__init__()
        dims = cfg.dims
        stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0]))
        downs = [
            nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            for i in range(len(dims) - 1)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downs])
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth)))
            for dim, depth in zip(dims, cfg.depths, strict=True)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.fc_kp = nn.Linear(dims[-1], 3 * NUM_KP)
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], cfg.num_bins)
        self.fc_yaw = nn.Linear(dims[-1], cfg.num_bins)
        self.fc_roll = nn.Linear(dims[-1], cfg.num_bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(dims[-1], 3 * NUM_KP)

    def forward(self, x: torch.Tensor) -> MotionOutput:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        feat = self.norm(x.mean(dim=(-2, -1)))  # global average pool
        return MotionOutput(
            pitch=self.fc_pitch(feat),
            yaw=self.fc_yaw(feat),
            roll=self.fc_roll(feat),
            t=self.fc_t(feat),
            exp=self.fc_exp(feat),
            scale=self.fc_scale(feat),
            kp=self.fc_kp(feat),
        )


class MotionExtractor(nn.Module):
    """B x 3 x 256 x 256 in [0, 1] -> MotionOutput. The checkpoint nests the backbone as ``detector``."""

    def __init__(self, cfg: MotionConfig) -> None:
        super().__init__()
        self.detector = ConvNeXtV2Detector(cfg)

    def forward(self, image: torch.Tensor) -> MotionOutput:
        return self.detector(image)
