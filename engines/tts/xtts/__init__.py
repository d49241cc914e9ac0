"""XTTS-v2 (coqui-tts): the production cloned voice. coqui is imported when the engine loads."""

from engines.tts.xtts.engine import XTTSEngine

__all__ = ["XTTSEngine"]
