"""SPADE decoder (G): warped features -> RGB image at twice the input resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SPADEResBlock
from .config import SpadeConfig

NUM_MIDDLE_BLOCKS = 6


class SPADEDecoder(nn.Module):
    """B x 256 x 64 x 64 -> B x 3 x 512 x 512 in [0, 1] (release sizes)."""

    def __init__(self, cfg: SpadeConfig) -> None:
        super().__init__()
        cond = min(cfg.max_features, cfg.block_expansion * 2**cfg.num_down_blocks)
        wide = 2 * cond
        hidden = cfg.modulation_hidden
        self.fc = nn.Conv2d(cond, wide, kernel_size=3, padding=1)
        self.middle_names = tuple(f"G_middle_{i}" for i in range(NUM_MIDDLE_BLOCKS))
        for name in self.middle_names:
            self.add_module(name, SPADEResBlock(wide, wide, cond, hidden))
        self.up_0 = SPADEResBlock(wide, cond, cond, hidden)
        self.up_1 = SPADEResBlock(cond, cfg.out_channels, cond, hidden)
        # Sub-pixel output: predict upscale^2 RGB planes per pixel, then shuffle them into space.
        self.conv_img = nn.Sequential(
            nn.Conv2d(cfg.out_channels, 3 * cfg.upscale**2, kernel_size=3, padding=1),
            nn.PixelShuffle(cfg.upscale),
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for name in self.middle_names:
            x = getattr(self, name)(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2.0), feature)
        x = self.up_1(F.interpolate(x, scale_factor=2.0), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))
