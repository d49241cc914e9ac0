"""The run document's shape: {"run_id": str, "metrics": {the eight metrics, extras allowed}}, extras
allowed beside "metrics" too. All eight are finite numbers except language_detected (a string)."""

from __future__ import annotations

import math
from typing import Any

METRIC_KEYS = (
    "tts_ms", "avatar_render_ms", "total_generation_ms", "speaker_similarity", "f0_rmse_hz",
    "language_detected", "language_correctness_1_1", "lip_sync_coherence_0_1",
)
NUMERIC_KEYS = tuple(key for key in METRIC_KEYS if key != "language_detected")
# f0_rmse_hz is null when no frame is voiced in both the run and its baseline: undefined, not 0.
NULLABLE_KEYS = ("f0_rmse_hz",)


def check_schema(document: dict[str, Any]) -> None:
    """Raise ValueError unless ``document`` has the shape (and value ranges) the owner's tools read."""
    if not isinstance(document.get("run_id"), str) or not document["run_id"]:
        raise ValueError("run_id must be a non-empty string")
    values = document.get("metrics")
    if not isinstance(values, dict):
        raise ValueError("metrics must be an object")
    missing = [key for key in METRIC_KEYS if key not in values]
    if missing:
        raise ValueError(f"metrics lack {missing}")
    for key in NUMERIC_KEYS:
        value = values[key]
        if value is None and key in NULLABLE_KEYS:
            continue
        # bool is an int subclass; NaN/inf would not survive strict JSON readers.
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, not {value!r}")
        if key.endswith("_ms") and value < 0:
            raise ValueError(f"{key} must not be negative")
    language = values["language_detected"]
    if not isinstance(language, str) or not language or language != language.upper():
        raise ValueError("language_detected must be upper-case codes like 'EN' or 'EN/ZH/ES'")
    if values["language_correctness_1_1"] not in (0, 1):
        raise ValueError("language_correctness_1_1 must be 0 or 1")
    for key in ("speaker_similarity", "lip_sync_coherence_0_1"):
        if not 0.0 <= values[key] <= 1.0:
            raise ValueError(f"{key} must lie in 0..1")
    if values["f0_rmse_hz"] is not None and values["f0_rmse_hz"] < 0:
        raise ValueError("f0_rmse_hz must not be negative")
