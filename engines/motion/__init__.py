"""Audio -> per-frame motion (mouth, blinks, head pose, breathing) for the avatar renderers."""

from engines.motion.generator import MotionGenerator
from engines.motion.track import CHANNELS, MotionTrack

__all__ = ["CHANNELS", "MotionGenerator", "MotionTrack"]
