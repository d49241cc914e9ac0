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
# Optional metrics, checked when present: lip sync to the words (0..1, null when no part could be judged)
# and the pitch against the reference voice / the golden run (signed semitones and shares, null when
# unvoiced or when there is no golden run for this configuration).
UNIT_KEYS = ("lip_sync_words_0_1", "lip_sync_words_matched_share")
SIGNED_KEYS = ("f0_median_st_vs_reference", "f0_range_st_vs_reference", "voiced_share_vs_reference",
               "f0_median_st_vs_golden", "f0_range_st_vs_golden", "voiced_share_vs_golden")


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
    for key in (*UNIT_KEYS, *SIGNED_KEYS):
        value = values.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number or null, not {value!r}")
        if key in UNIT_KEYS and not 0.0 <= value <= 1.0:
            raise ValueError(f"{key} must lie in 0..1")
    for key, value in (values.get("lip_sync_words_parts") or {}).items():
        if value is not None and not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
            raise ValueError(f"lip_sync_words_parts.{key} must lie in 0..1 or be null")
