"""Text to speech: the engine contract (``TTSEngine``) and the bundled CPU voice (``BundledTTS``)."""

from engines.tts.base import AudioChunk, TTSEngine
from engines.tts.bundled import BundledTTS
from engines.tts.voice import Voice

__all__ = ["AudioChunk", "BundledTTS", "TTSEngine", "Voice"]
