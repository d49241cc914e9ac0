"""Evaluator metrics and their negative controls: each metric must tell a bad output from a good one."""

import json

import numpy as np
import pytest

from engines.avatar.measure import FaceMeter
from engines.media.audio import load_audio
from engines.media.mp4 import Mp4Writer, read_frames
from evaluator import metrics
from evaluator.__main__ import main as evaluator_main
from evaluator.run import METRIC_KEYS, check_schema
from realtime_avatar.pipeline import AvatarPipeline

SR = 24_000
FPS = 25


@pytest.fixture(scope="module")
def pipeline():
    return AvatarPipeline()


@pytest.fixture(scope="module")
def lj(data_dir):
    return load_audio(data_dir / "LJ001-0001.wav")


def _tone(freq: float, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_speaker_similarity_identical_vs_other_speaker(pipeline, lj):
    pcm, sr = lj
    assert metrics.speaker_similarity(pcm, sr, pcm, sr) > 0.99
    # The default bundled voice is a male speaker (Piper joe): a different person from LJ.
    other, other_sr = pipeline.tts.synthesize("Printing, in the only sense with which we are at present "
                                             "concerned, differs from most if not from all the arts.", "en")
    different = metrics.speaker_similarity(other, other_sr, pcm, sr)
    assert different < 0.85, different


def test_f0_rmse_of_200_vs_210_hz_tone_is_about_10():
    rmse = metrics.f0_rmse_hz(metrics.f0_contour(_tone(210), SR), metrics.f0_contour(_tone(200), SR))
    assert 8.5 < rmse < 11.5, rmse
    same = metrics.f0_rmse_hz(metrics.f0_contour(_tone(200), SR), metrics.f0_contour(_tone(200), SR))
    assert same < 1.0


def test_spanish_audio_labelled_english_is_incorrect(pipeline):
    pcm, sr = pipeline.tts.synthesize("Hola, mucho gusto en conocerte. Bienvenidos a mi página.", "es")
    heard = pipeline.asr.transcribe(pcm, sr).language
    assert metrics.language_result([heard], ["en"]) == ("ES", 0)
    assert metrics.language_result([heard], ["es"]) == ("ES", 1)


@pytest.fixture(scope="module")
def real_render(pipeline, tmp_path_factory):
    path = tmp_path_factory.mktemp("lipsync") / "real.mp4"
    text = "Thanks for stopping by. I build realtime avatars that listen, think and answer."
    pipeline.render_mp4(text, "en", path)
    pcm, sr = load_audio(path)
    return read_frames(path), pcm, sr


def _score(frames: np.ndarray, pcm: np.ndarray, sr: int) -> float:
    mouth = FaceMeter().measure_video(frames).mouth_open
    return metrics.lip_sync_coherence(mouth, metrics.frame_envelope(pcm, sr, FPS, len(frames)))


def test_lip_sync_controls_score_clearly_lower(real_render):
    frames, pcm, sr = real_render
    real = _score(frames, pcm, sr)
    still = _score(np.repeat(frames[:1], len(frames), axis=0), pcm, sr)
    shift = int(0.5 * sr)
    shifted = _score(frames, np.concatenate([np.zeros(shift, np.float32), pcm[:-shift]]), sr)
    assert real > 0.5, real
    assert still < real - 0.3, (still, real)
    assert shifted < real - 0.2, (shifted, real)


def test_lip_sync_scores_on_the_written_mp4_with_shifted_audio(real_render, tmp_path):
    frames, pcm, sr = real_render
    path = tmp_path / "shifted.mp4"
    shift = int(0.5 * sr)
    with Mp4Writer(path, width=frames.shape[2], height=frames.shape[1], sample_rate=sr) as writer:
        writer.write_audio(np.concatenate([np.zeros(shift, np.float32), pcm[:-shift]]))
        writer.write_frames(frames)
    shifted_pcm, shifted_sr = load_audio(path)
    assert _score(read_frames(path), shifted_pcm, shifted_sr) < _score(frames, pcm, sr) - 0.2


def test_schema_check_rejects_bad_documents():
    good = {"run_id": "2026-11-06T01:23:45Z_EN_short", "metrics": {
        "tts_ms": 242, "avatar_render_ms": 1040, "total_generation_ms": 1290, "speaker_similarity": 0.84,
        "f0_rmse_hz": 17.9, "language_detected": "EN", "language_correctness_1_1": 1,
        "lip_sync_coherence_0_1": 0.72}}
    check_schema(good)
    for key, bad in (("speaker_similarity", 1.5), ("language_correctness_1_1", 0.5), ("tts_ms", "fast")):
        with pytest.raises(ValueError):
            check_schema({**good, "metrics": {**good["metrics"], key: bad}})
    with pytest.raises(ValueError):
        incomplete = {k: v for k, v in good["metrics"].items() if k != "f0_rmse_hz"}
        check_schema({"run_id": "x", "metrics": incomplete})


def test_a_real_run_writes_the_exact_shape(tmp_path):
    args = ["run", "--scenarios", "ES_short", "--repeats", "2", "--output", str(tmp_path)]
    assert evaluator_main(args) == 0
    documents = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert len(documents) == 2
    for document in documents:
        check_schema(document)
        assert set(METRIC_KEYS) <= set(document["metrics"])
        assert "Z_ES_short" in document["run_id"]
        assert document["metrics"]["language_detected"] == "ES"
    # The first run is the pitch baseline; the second is compared with it.
    assert documents[0]["metrics"]["f0_rmse_hz"] == 0.0
    assert (tmp_path / "summary.md").read_text().count("| ES_short | 2 |") == 1
    assert (tmp_path / "trends.png").stat().st_size > 0
    assert evaluator_main(["run", "--target", "http://127.0.0.1:1", "--output", str(tmp_path)]) == 2
