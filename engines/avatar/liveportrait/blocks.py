"""Layers shared by the LivePortrait networks.

Attribute names (``conv``, ``norm``, ``weight_orig`` ...) are the checkpoint's parameter names, so
renaming one breaks loading of the released weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock2d(nn.Module):
    """Conv -> BatchNorm -> (leaky) ReLU at constant resolution."""

    def __init__(self, in_ch: int, out_ch: int, *, leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_ch)
        self.leaky = leaky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return F.leaky_relu(x) if self.leaky else F.relu(x)


class DownBlock2d(ConvBlock2d):
    """ConvBlock2d followed by 2x average pooling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(super().forward(x), 2)


class DownBlock3d(nn.Module):
    """Conv3d -> BatchNorm -> ReLU, then halve height and width (depth is kept)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), (1, 2, 2))


class UpBlock3d(nn.Module):
    """Double height and width (nearest), then Conv3d -> BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0))
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block on a feature volume."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(out)))


def _level_width(expansion: int, level: int, cap: int) -> int:
    return min(cap, expansion * 2**level)


class HourglassEncoder(nn.Module):
    def __init__(self, expansion: int, in_ch: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        widths = [in_ch] + [_level_width(expansion, i + 1, max_features) for i in range(num_blocks)]
        self.down_blocks = nn.ModuleList(DownBlock3d(widths[i], widths[i + 1]) for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    def __init__(self, expansion: int, in_ch: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for level in reversed(range(num_blocks)):
            # Every level but the deepest also receives the encoder skip (hence twice the width).
            skip = 1 if level == num_blocks - 1 else 2
            blocks.append(
                UpBlock3d(
                    skip * _level_width(expansion, level + 1, max_features),
                    _level_width(expansion, level, max_features),
                )
            )
        self.up_blocks = nn.ModuleList(blocks)
        self.out_channels = expansion + in_ch
        self.conv = nn.Conv3d(self.out_channels, self.out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_channels)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1]), strict=True):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3-D U-Net that keeps depth and halves height/width per level."""

    def __init__(self, expansion: int, in_ch: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(expansion, in_ch, num_blocks, max_features)
        self.decoder = HourglassDecoder(expansion, in_ch, num_blocks, max_features)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class SpectralConv2d(nn.Module):
    """Conv2d whose weight is divided by its largest singular value (inference form).

    Stores ``weight_orig``, ``weight_u`` and ``weight_v`` exactly as ``torch.nn.utils.spectral_norm``
    saved them; at inference the estimate ``sigma = u . (W v)`` uses the stored vectors without
    further power iterations, which is what the original eval-mode forward does.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, *, bias: bool = True) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.weight_orig = nn.Parameter(torch.empty(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        nn.init.kaiming_uniform_(self.weight_orig, a=5**0.5)
        flat = self.weight_orig.detach().reshape(out_ch, -1)
        self.register_buffer("weight_u", F.normalize(torch.randn(out_ch), dim=0, eps=1e-12))
        self.register_buffer("weight_v", F.normalize(flat.t() @ self.weight_u, dim=0, eps=1e-12))

    def normalized_weight(self) -> torch.Tensor:
        flat = self.weight_orig.reshape(self.weight_orig.shape[0], -1)
        # float64 is exempt from autocast, so sigma stays exact (and dtype-consistent) under fp16 runs.
        sigma = torch.dot(self.weight_u.double(), torch.mv(flat.double(), self.weight_v.double()))
        return self.weight_orig / sigma.to(self.weight_orig.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding)


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: instance-norm x, then modulate it by convs of ``cond``."""

    def __init__(self, channels: int, cond_channels: int, hidden: int) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = F.interpolate(cond, size=x.shape[2:], mode="nearest")
        act = self.mlp_shared(cond)
        return F.instance_norm(x) * (1 + self.mlp_gamma(act)) + self.mlp_beta(act)


class SPADEResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, cond_channels: int, hidden: int) -> None:
        super().__init__()
        mid = min(in_ch, out_ch)
        self.conv_0 = SpectralConv2d(in_ch, mid, 3)
        self.conv_1 = SpectralConv2d(mid, out_ch, 3)
        self.norm_0 = SPADE(in_ch, cond_channels, hidden)
        self.norm_1 = SPADE(mid, cond_channels, hidden)
        self.learned_shortcut = in_ch != out_ch
        if self.learned_shortcut:
            self.conv_s = SpectralConv2d(in_ch, out_ch, 1, bias=False)
            self.norm_s = SPADE(in_ch, cond_channels, hidden)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2))
        return shortcut + dx


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GRN(nn.Module):
    """ConvNeXtV2 global response normalisation on NHWC tensors."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x
