"""Avatar engines: portrait preparation, renderers (``lite`` CPU warp, LivePortrait) and frame measurement."""

from engines.avatar.portrait import Portrait, prepare_portrait

prepare = prepare_portrait  # the name the architecture notes use

__all__ = ["Portrait", "prepare", "prepare_portrait"]
