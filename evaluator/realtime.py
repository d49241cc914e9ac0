"""The evaluator's realtime mode: each scenario's text is *asked by voice* in a call to the runtime, and
the avatar's spoken answer, as received over WebRTC, is measured (the realtime harness's client).

One call (a fresh session with the reference voice) per scenario run. The document has the spec's
shape (``evaluator.schema``); in this mode the eight metrics read:

- ``total_generation_ms``: end of the caller's speech -> first avatar audio above silence (client side)
- ``tts_ms``: the runtime's first sentence -> first rendered part (TTS, motion and frames of that part:
  the runtime times them as one step)
- ``avatar_render_ms``: first rendered part -> its first frame sent (encoding and the media queue)
- ``speaker_similarity``: the received reply audio vs the reference voice (Resemblyzer)
- ``f0_rmse_hz``: null: a reply's words differ from run to run, so there is no baseline to align to
- ``language_detected`` / ``language_correctness_1_1``: whisper (language identified) on the received
  reply; correct when it is the scenario's first language (a mixed question is answered in one)
- ``lip_sync_coherence_0_1``: the evaluator's coherence (mouth openness vs audio RMS per frame, best of
  +-2 frames) on the received frames of the reply, the RMS taken on the arrival timeline

and ``realtime`` holds the harness's per-turn measures (first frame, A/V lag, pacing, the runtime's
``turn_timings``, the transcript and the reply text).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engines.media.audio import load_audio
from engines.media.files import atomic_output
from evaluator.metrics import language, lipsync, speaker
from evaluator.schema import check_schema
from realtime_avatar.cache import content_hash
from realtime_avatar.rtc import measure
from realtime_avatar.rtc.harness import (
    Line,
    analyse,
    call_summary,
    record_call,
    reply_audio,
    speak_lines,
    upload_voice,
)
from realtime_avatar.scenarios import Scenario


def frame_levels(env: measure.Envelope, frame_times: np.ndarray, frame_s: float = 0.04) -> np.ndarray:
    """Audio RMS over each frame's span ``[t, t + frame_s)`` on the arrival timeline."""
    out = np.zeros(len(frame_times))
    for i, t in enumerate(frame_times):
        k = (env.times >= t) & (env.times < t + frame_s)
        out[i] = float(np.sqrt(np.mean(env.rms[k].astype(np.float64) ** 2))) if k.any() else 0.0
    return out


class RealtimeEvaluator:
    """One runtime, reference voice and caller voice for every run of a session."""

    def __init__(self, base_url: str, output_dir: Path, reference: Path, asr: Any = None) -> None:
        from evaluator.metrics import pitch

        self.base_url, self.output_dir = base_url, output_dir
        pcm, sample_rate = load_audio(reference)
        self.reference_embedding = speaker.speaker_embedding(pcm, sample_rate)
        self.reference_f0 = pitch.pitch_track(pcm, sample_rate).mean_hz
        self.voice_id = upload_voice(base_url, reference)
        self.digest = content_hash(reference.read_bytes())[:12]
        if asr is None:
            from engines.asr.whisper import WhisperASR

            asr = WhisperASR()
            asr.load()
        self.asr = asr

    def run(self, scenario: Scenario) -> dict[str, Any]:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        run_id, n = f"{stamp}_realtime_{scenario.name}", 2
        while (self.output_dir / f"{run_id}.json").exists():
            run_id, n = f"{stamp}_realtime_{scenario.name}_{n}", n + 1
        spoken_language = scenario.language if scenario.language != "auto" else scenario.languages[0]
        (utterance,) = speak_lines(self.base_url, [Line(scenario.text, spoken_language)])
        recording = record_call(self.base_url, "auto", [utterance], session={"voice_id": self.voice_id})
        media = analyse(recording)
        (row,) = measure.measure_turns(media)
        values = self._metrics(recording, media, row, scenario)
        document = {
            "run_id": run_id,
            "metrics": values,
            "scenario": scenario.name,
            "mode": "realtime",
            "target": self.base_url,
            "config_key": f"realtime_{self.digest}",
            "realtime": {**row, "call": call_summary(media, [row]), "session_id": recording.session_id,
                         "call_id": recording.call_id, "utterance": asdict(recording.utterances[0])},
        }
        check_schema(document)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.output_dir / f"{run_id}.json") as tmp:
            tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=float))
        return document

    def _metrics(self, recording: Any, media: measure.CallMedia, row: dict[str, Any],
                 scenario: Scenario) -> dict[str, Any]:
        from evaluator.metrics import pitch

        server = row.get("server_timings_ms") or {}

        def step(a: str, b: str) -> float:
            if a in server and b in server:
                return round(max(0.0, server[b] - server[a]), 1)
            return 0.0  # not reported (the reply failed): the schema wants a number

        values: dict[str, Any] = {
            "total_generation_ms": row["first_audio_ms"] if row["first_audio_ms"] is not None else 0.0,
            "tts_ms": step("first_sentence", "first_part"),
            "avatar_render_ms": step("first_part", "first_frame_sent"),
            "speaker_similarity": 0.0, "f0_rmse_hz": None, "language_detected": "NONE",
            "language_correctness_1_1": 0, "lip_sync_coherence_0_1": 0.0, "answered": 0,
            "reference_f0_mean_hz": None if self.reference_f0 is None else round(self.reference_f0, 1),
        }
        if not row.get("reply_window"):
            return values
        pcm, sample_rate = reply_audio(recording, row["reply_window"])
        heard = self.asr.transcribe(pcm, sample_rate)
        detected, correct = language.language_result([heard.language], scenario.languages[:1])
        a, b = row["reply_window"]
        pick = (media.frame_times >= a) & (media.frame_times < b)
        coherence = lipsync.lip_sync_coherence(media.mouth[pick],
                                               frame_levels(media.envelope, media.frame_times[pick]))
        embedding = speaker.speaker_embedding(pcm, sample_rate)
        track = pitch.pitch_track(pcm, sample_rate)
        values.update({
            "speaker_similarity": round(speaker.cosine_similarity(embedding, self.reference_embedding), 4),
            "language_detected": detected, "language_correctness_1_1": correct,
            "lip_sync_coherence_0_1": round(coherence, 4), "answered": 1,
            "asr_text": heard.text, "audio_seconds": round(len(pcm) / sample_rate, 3),
            "f0_mean_hz": None if track.mean_hz is None else round(track.mean_hz, 1),
        })
        return values
