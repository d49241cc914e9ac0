"""Render one scenario, measure the MP4 it wrote, store one JSON per run (the MP4 stays beside it)."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engines.avatar.measure import FaceMeter
from engines.media.audio import load_audio
from engines.media.files import atomic_output
from engines.media.mp4 import probe_mp4, read_frames
from evaluator import golden
from evaluator.metrics import language, lipsync, lipsync_words, pitch, speaker
from evaluator.schema import check_schema
from realtime_avatar.cache import content_hash
from realtime_avatar.pipeline import AvatarPipeline, RenderReport
from realtime_avatar.scenarios import Scenario


@dataclass(frozen=True)
class Reference:
    """The reference voice, measured once per evaluator session."""

    digest: str
    embedding: np.ndarray
    pitch: pitch.PitchTrack
    f0: pitch.F0Stats

    @classmethod
    def load(cls, path: Path) -> Reference:
        pcm, sample_rate = load_audio(path)
        track = pitch.pitch_track(pcm, sample_rate)
        return cls(content_hash(path.read_bytes())[:12], speaker.speaker_embedding(pcm, sample_rate),
                   track, pitch.f0_stats(track, pcm, sample_rate))


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _pitch_vs(prefix: str, run: pitch.F0Stats, other: pitch.F0Stats | None) -> dict[str, float | None]:
    diff = pitch.compare_stats(run, other) if other is not None else dict.fromkeys(("median_st", "range_st",
                                                                                    "voiced_share"))
    return {f"f0_median_st_vs_{prefix}": _round(diff["median_st"], 2),
            f"f0_range_st_vs_{prefix}": _round(diff["range_st"], 2),
            f"voiced_share_vs_{prefix}": _round(diff["voiced_share"], 3)}


def measure(mp4: Path, report: RenderReport, scenario: Scenario, reference: Reference, asr: Any,
            baseline: pitch.PitchTrack | None,
            golden_f0: pitch.F0Stats | None = None) -> tuple[dict[str, Any], pitch.PitchTrack]:
    """Every metric from the written file (the report gives only timings and, for a run in several
    languages, where each language's text lies in the audio).

    Returns the metrics and this run's pitch track; with no baseline yet the run is its own baseline.
    """
    pcm, sample_rate = load_audio(mp4)
    heard = language.hear_segments(asr, pcm, sample_rate, report.segments)
    language_detected, correct = language.language_result([h.language for h in heard], scenario.languages)

    frames = read_frames(mp4)
    fps = probe_mp4(mp4).fps
    mouth = FaceMeter().measure_video(frames)
    envelope = lipsync.frame_envelope(pcm, sample_rate, fps, len(frames))
    coherence = lipsync.lip_sync_coherence(mouth.mouth_open, envelope)
    words = lipsync_words.lip_sync_words(frames, fps, pcm, sample_rate, report.segments, asr, mouth=mouth)

    track = pitch.pitch_track(pcm, sample_rate)
    f0 = pitch.f0_stats(track, pcm, sample_rate)
    similarity = speaker.cosine_similarity(speaker.speaker_embedding(pcm, sample_rate), reference.embedding)
    timings = report.timings_ms
    values = {
        "tts_ms": round(timings.get("tts_ms", 0.0), 1),
        "avatar_render_ms": round(timings.get("avatar_render_ms", 0.0), 1),
        "total_generation_ms": round(timings["total_generation_ms"], 1),
        "speaker_similarity": round(similarity, 4),
        "f0_rmse_hz": _round(pitch.f0_rmse_hz(track, baseline or track), 2),
        "language_detected": language_detected,
        "language_correctness_1_1": correct,
        "lip_sync_coherence_0_1": round(coherence, 4),
        "asr_wer": round(float(np.mean([h.error_rate for h in heard])), 4) if heard else None,
        "audio_seconds": round(report.audio_seconds, 3),
        "real_time_factor": round(report.real_time_factor, 4),
        "f0_mean_hz": _round(track.mean_hz, 1),
        "reference_f0_mean_hz": _round(reference.pitch.mean_hz, 1),
        **words.to_metrics(),
        "f0_median_hz": _round(f0.median_hz, 1),
        "f0_range_st": _round(f0.range_st, 2),
        "voiced_share": round(f0.voiced_share, 3),
        **_pitch_vs("reference", f0, reference.f0),
        **_pitch_vs("golden", f0, golden_f0),
    }
    return values, track


class Evaluator:
    """One pipeline, portrait and reference voice, reused by every run of a session."""

    # f0_rmse_hz compares a run with the scenario's first: only where every run says the same words.
    same_words_each_run: ClassVar[bool] = True

    def __init__(self, output_dir: Path, reference: Path, image: Path | None = None,
                 speak_with_reference: bool = True) -> None:
        self.output_dir = output_dir
        self.pipeline = AvatarPipeline()
        self.reference = Reference.load(reference)
        self.portrait = self.pipeline.prepare_portrait(image)
        # The bundled TTS does not clone: the reference picks its nearest-pitch preset per language.
        # Without it the TTS speaks in its default voice (the pitch is still judged against the reference).
        self.voice = self.pipeline.prepare_voice(reference) if speak_with_reference else None
        settings = self.pipeline.settings
        # Baselines are only comparable for the same engines, options, seed and reference voice.
        self.config_key = content_hash(
            settings.tts.model_dump_json(), settings.avatar.model_dump_json(),
            settings.motion.model_dump_json(), settings.render.model_dump_json(), self.reference.digest,
            *(() if speak_with_reference else ("default voice",)),
        )[:12]
        self.golden = golden.load_golden(self.config_key)
        self.asr = self.pipeline.asr
        self.engines = {"tts": settings.tts.name, "avatar": settings.avatar.name, "asr": settings.asr.name}
        self.document_extras: dict[str, Any] = {}  # beside "metrics" in every document (the API run's target)
        self.pipeline.warm_up()

    def _run_id(self, scenario: Scenario) -> str:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        run_id, n = f"{stamp}_{scenario.name}", 2
        while (self.output_dir / f"{run_id}.json").exists():  # two runs within one second
            run_id, n = f"{stamp}_{scenario.name}_{n}", n + 1
        return run_id

    def baseline_path(self, scenario: Scenario) -> Path:
        return self.output_dir / "baselines" / f"{scenario.name}_{self.config_key}.npz"

    def golden_stats(self, scenario: Scenario, work_dir: Path) -> pitch.F0Stats:
        """F0 statistics of one fresh render (for ``python -m evaluator golden``; the MP4 is not kept)."""
        mp4 = work_dir / f"{scenario.name}.mp4"
        self.pipeline.render_mp4(scenario.text, scenario.language, mp4, portrait=self.portrait,
                                 voice=self.voice)
        pcm, sample_rate = load_audio(mp4)
        mp4.unlink()
        return pitch.f0_stats(pitch.pitch_track(pcm, sample_rate), pcm, sample_rate)

    def render(self, scenario: Scenario, mp4: Path) -> tuple[RenderReport, dict[str, Any]]:
        """Render ``scenario`` to ``mp4``: the report (segments, stage timings) and any metrics of the render
        itself beside those measured on the file (none in-process; the API run's client times)."""
        report = self.pipeline.render_mp4(scenario.text, scenario.language, mp4, portrait=self.portrait,
                                          voice=self.voice)
        return report, {}

    def judged_as(self, scenario: Scenario, report: RenderReport) -> Scenario:
        """The scenario whose expected languages the render is judged against (a chat reply differs)."""
        return scenario

    def run(self, scenario: Scenario) -> dict[str, Any]:
        run_id = self._run_id(scenario)
        mp4 = self.output_dir / "media" / f"{run_id}.mp4"
        report, extra = self.render(scenario, mp4)
        baseline_path = self.baseline_path(scenario)
        baseline = pitch.PitchTrack.load(baseline_path) if baseline_path.exists() else None
        values, track = measure(mp4, report, self.judged_as(scenario, report), self.reference, self.asr,
                                baseline, self.golden.get(scenario.name))
        if not self.same_words_each_run:
            values["f0_rmse_hz"] = None  # no baseline to align to: the words differ from run to run
        elif baseline is None:
            with atomic_output(baseline_path) as tmp:
                track.save(tmp)
        document = {
            "run_id": run_id,
            "metrics": {**values, **extra},
            "scenario": scenario.name,
            "engines": self.engines,
            "config_key": self.config_key,
            "machine": {"arch": platform.machine(), "host": platform.node(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
            "media": str(mp4.relative_to(self.output_dir)),
            **self.document_extras,
        }
        check_schema(document)
        with atomic_output(self.output_dir / f"{run_id}.json") as tmp:
            tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False))
        return document

