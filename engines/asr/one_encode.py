"""faster-whisper that encodes a short utterance once when it also has to detect its language.

faster-whisper 1.2's ``transcribe(language=None)`` runs the encoder over the 30 s window twice: once to
detect the language, once more to decode. The two inputs differ only by the feature extractor's
trailing padding frame, which decoding drops and detection keeps. Here detection drops it too, so both
encode the same window, and the encoder output is reused. On 2 cores that is one pass of ~0.5 s saved
for every turn of a realtime call in ``auto`` (BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from faster_whisper import WhisperModel


class OneEncodeWhisper(WhisperModel):
    """``WhisperModel`` whose last encoder output is reused for the same features.

    One slot for all threads: the stored features are compared in full before the output is reused, so
    concurrent transcriptions can only evict each other's entry (one more encode), never mix outputs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last: tuple[np.ndarray, Any] | None = None

    def detect_language(self, audio: np.ndarray | None = None, features: np.ndarray | None = None,
                        **options: Any) -> tuple[str, float, list[tuple[str, float]]]:
        window = self.feature_extractor.nb_max_frames
        if audio is None and features is not None and 1 < features.shape[-1] <= window + 1:
            features = features[..., :-1]  # as decoding sees it: without the trailing padding frame
        return super().detect_language(audio=audio, features=features, **options)

    def encode(self, features: np.ndarray) -> Any:
        cached = self._last
        if cached is not None and cached[0].shape == features.shape and np.array_equal(cached[0], features):
            return cached[1]
        output = super().encode(features)
        self._last = (np.array(features, copy=True), output)
        return output

    def forget(self) -> None:
        """Drop the cached encoder output (a few MB) once a transcription is done."""
        self._last = None
