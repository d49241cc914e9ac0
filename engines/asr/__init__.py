"""Speech recognition: faster-whisper with the bundled base model (CPU) or any CTranslate2 dir."""

from engines.asr.bundled import ensure_base_model
from engines.asr.whisper import Segment, Transcript, WhisperASR, Word

__all__ = ["Segment", "Transcript", "WhisperASR", "Word", "ensure_base_model"]
