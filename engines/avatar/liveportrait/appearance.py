"""Appearance feature extractor (F): source image -> 3-D appearance feature volume."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBlock2d, DownBlock2d, ResBlock3d
from .config import AppearanceConfig


class AppearanceFeatureExtractor(nn.Module):
    """B x 3 x 256 x 256 in [0, 1] -> B x 32 x 16 x 64 x 64 (release sizes)."""

    def __init__(self, cfg: AppearanceConfig) -> None:
        super().__init__()
        self.reshape_channel = cfg.reshape_channel
        self.reshape_depth = cfg.reshape_depth
        self.first = ConvBlock2d(cfg.image_channel, cfg.block_expansion)
        widths = [min(cfg.max_features, cfg.block_expansion * 2**i) for i in range(cfg.num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1]) for i in range(cfg.num_down_blocks)
        )
        self.second = nn.Conv2d(widths[-1], cfg.max_features, kernel_size=1)
        # Sequential children named "3dr0".. as in the checkpoint.
        self.resblocks_3d = nn.Sequential()
        for i in range(cfg.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(cfg.reshape_channel))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.first(image)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        b, _, h, w = x.shape
        # The 2-D channels are read as (channel, depth): channel index = c * depth + d.
        volume = x.view(b, self.reshape_channel, self.reshape_depth, h, w)
        return self.resblocks_3d(volume)
