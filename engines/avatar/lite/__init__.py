"""The CPU "lite" renderer: landmark-driven warps and painted overlays, no neural network."""

from engines.avatar.lite.config import LiteConfig
from engines.avatar.lite.renderer import LiteRenderer

__all__ = ["LiteConfig", "LiteRenderer"]
