"""Render each scenario, measure the MP4, write one JSON per run (and keep the MP4 beside it)."""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engines.asr.metrics import error_rate
from engines.avatar.measure import FaceMeter
from engines.media.audio import load_audio
from engines.media.files import atomic_output
from engines.media.mp4 import probe_mp4, read_frames
from evaluator import metrics
from realtime_avatar.cache import content_hash
from realtime_avatar.pipeline import AvatarPipeline, RenderReport
from realtime_avatar.scenarios import Scenario

log = logging.getLogger("evaluator")
METRIC_KEYS = (
    "tts_ms", "avatar_render_ms", "total_generation_ms", "speaker_similarity", "f0_rmse_hz",
    "language_detected", "language_correctness_1_1", "lip_sync_coherence_0_1",
)


@dataclass(frozen=True)
class Reference:
    pcm: np.ndarray
    sample_rate: int
    digest: str


def load_reference(path: Path) -> Reference:
    pcm, sample_rate = load_audio(path)
    return Reference(pcm, sample_rate, content_hash(path.read_bytes())[:12])


def measure(mp4: Path, report: RenderReport, scenario: Scenario, reference: Reference, asr: Any,
            baseline: np.ndarray | None) -> tuple[dict[str, Any], np.ndarray]:
    """All metrics from the file itself; returns them and this run's F0 contour."""
    pcm, sample_rate = load_audio(mp4)
    heard, errors = [], []
    for segment in report.segments:
        piece = pcm[int(segment.start_s * sample_rate) : int(segment.end_s * sample_rate)]
        transcript = asr.transcribe(piece, sample_rate)
        heard.append(transcript.language)
        errors.append(error_rate(segment.text, transcript.text, segment.language))
    language_detected, correct = metrics.language_result(heard, scenario.languages)

    frames = read_frames(mp4)
    fps = probe_mp4(mp4).fps
    mouth = FaceMeter().measure_video(frames).mouth_open
    envelope = metrics.frame_envelope(pcm, sample_rate, fps, len(frames))

    contour = metrics.f0_contour(pcm, sample_rate)
    reference_contour = metrics.f0_contour(reference.pcm, reference.sample_rate)
    timings = report.timings_ms
    values = {
        "tts_ms": round(timings.get("tts_ms", 0.0), 1),
        "avatar_render_ms": round(timings.get("avatar_render_ms", 0.0), 1),
        "total_generation_ms": round(timings["total_generation_ms"], 1),
        "speaker_similarity": round(metrics.speaker_similarity(pcm, sample_rate, reference.pcm,
                                                               reference.sample_rate), 4),
        "f0_rmse_hz": round(metrics.f0_rmse_hz(contour, contour if baseline is None else baseline), 2),
        "language_detected": language_detected,
        "language_correctness_1_1": correct,
        "lip_sync_coherence_0_1": round(metrics.lip_sync_coherence(mouth, envelope), 4),
        "asr_wer": round(float(np.mean(errors)), 4) if errors else None,
        "audio_seconds": round(report.audio_seconds, 3),
        "real_time_factor": round(report.real_time_factor, 4),
        "f0_mean_hz": round(float(contour.mean()), 1) if contour.size else None,
        "reference_f0_mean_hz": round(float(reference_contour.mean()), 1) if reference_contour.size else None,
    }
    return values, contour


def check_schema(document: dict[str, Any]) -> None:
    """The shape the owner's tools read: run_id plus the eight metrics with their types and ranges."""
    if not isinstance(document.get("run_id"), str) or not isinstance(document.get("metrics"), dict):
        raise ValueError("a run needs a string run_id and a metrics object")
    values = document["metrics"]
    missing = [key for key in METRIC_KEYS if key not in values]
    if missing:
        raise ValueError(f"metrics lack {missing}")
    for key in METRIC_KEYS:
        if key != "language_detected" and not isinstance(values[key], int | float):
            raise ValueError(f"{key} must be a number")
    if not isinstance(values["language_detected"], str) or not values["language_detected"]:
        raise ValueError("language_detected must be a non-empty string")
    if values["language_correctness_1_1"] not in (0, 1):
        raise ValueError("language_correctness_1_1 must be 0 or 1")
    for key in ("speaker_similarity", "lip_sync_coherence_0_1"):
        if not 0.0 <= values[key] <= 1.0:
            raise ValueError(f"{key} must lie in 0..1")


class Evaluator:
    def __init__(self, output_dir: Path, reference: Path, image: Path | None = None) -> None:
        self.output_dir = output_dir
        self.pipeline = AvatarPipeline()
        self.reference = load_reference(reference)
        self.portrait = self.pipeline.prepare_portrait(image)
        self.voice = self.pipeline.prepare_voice(reference)
        settings = self.pipeline.settings
        self.config_key = content_hash(
            settings.tts.model_dump_json(), settings.avatar.model_dump_json(),
            settings.motion.model_dump_json(), str(settings.render.seed), self.reference.digest,
        )[:12]
        self.pipeline.warm_up()

    def _run_id(self, scenario: Scenario) -> str:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        run_id, n = f"{stamp}_{scenario.name}", 2
        while (self.output_dir / f"{run_id}.json").exists():
            run_id, n = f"{stamp}_{scenario.name}_{n}", n + 1
        return run_id

    def _baseline_path(self, scenario: Scenario) -> Path:
        return self.output_dir / "baselines" / f"{scenario.name}_{self.config_key}.npy"

    def run(self, scenario: Scenario) -> dict[str, Any]:
        run_id = self._run_id(scenario)
        mp4 = self.output_dir / "media" / f"{run_id}.mp4"
        report = self.pipeline.render_mp4(scenario.text, scenario.language, mp4, portrait=self.portrait,
                                          voice=self.voice)
        baseline_path = self._baseline_path(scenario)
        baseline = np.load(baseline_path) if baseline_path.exists() else None
        values, contour = measure(mp4, report, scenario, self.reference, self.pipeline.asr, baseline)
        if baseline is None:
            baseline_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(baseline_path, contour)
        settings = self.pipeline.settings
        document = {
            "run_id": run_id,
            "metrics": values,
            "scenario": scenario.name,
            "engines": {"tts": settings.tts.name, "avatar": settings.avatar.name, "asr": settings.asr.name},
            "config_key": self.config_key,
            "machine": f"{platform.machine()}, {platform.node()}, Python {platform.python_version()}",
            "media": str(mp4.relative_to(self.output_dir)),
        }
        check_schema(document)
        with atomic_output(self.output_dir / f"{run_id}.json") as tmp:
            tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False))
        return document
