"""All LivePortrait networks in one module, built from a config."""

from __future__ import annotations

from torch import nn

from .appearance import AppearanceFeatureExtractor
from .config import LivePortraitConfig
from .motion import MotionExtractor
from .retargeting import RetargetingMLP
from .spade import SPADEDecoder
from .warping import WarpingNetwork


class LivePortraitNetworks(nn.Module):
    """Holds F, M, W, G and the three MLPs; attribute names are the checkpoint file stems."""

    def __init__(self, cfg: LivePortraitConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or LivePortraitConfig()
        self.appearance_feature_extractor = AppearanceFeatureExtractor(cfg.appearance)
        self.motion_extractor = MotionExtractor(cfg.motion)
        self.warping_module = WarpingNetwork(cfg.warping, cfg.appearance)
        self.spade_generator = SPADEDecoder(cfg.spade)
        self.stitching = RetargetingMLP(cfg.stitching)
        self.lip = RetargetingMLP(cfg.lip)
        self.eye = RetargetingMLP(cfg.eye)
