"""Stitching and eye / lip retargeting MLPs (S and R)."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from .config import MLPConfig


class RetargetingMLP(nn.Module):
    """Plain ReLU MLP; the checkpoint names its Linear layers ``mlp.0``, ``mlp.2``, ..."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        sizes = [cfg.input_size, *cfg.hidden_sizes]
        layers: list[nn.Module] = []
        for n_in, n_out in pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], cfg.output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
