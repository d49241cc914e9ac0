"""Evaluator metrics and their negative controls: each metric must tell a bad output from a good one."""

import json
from pathlib import Path

import librosa
import numpy as np
import pytest

from engines.media.audio import load_audio
from engines.media.mp4 import Mp4Writer, read_frames
from evaluator.__main__ import main as evaluator_main
from evaluator.metrics import language, lipsync, lipsync_words, pitch, speaker
from evaluator.schema import METRIC_KEYS, check_schema
from realtime_avatar.pipeline import AvatarPipeline, SpokenSegment

SR = 24_000
FPS = 25
LJ_TEXT = "Printing, in the only sense with which we are at present concerned, differs from most if not " \
          "from all the arts."


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
    same = speaker.speaker_similarity(pcm, sr, pcm, sr)
    assert same > 0.99, same
    # Control: LJ's own sentence read by the bundled default voice (Piper "joe", a male US speaker; LJ
    # is a female reader), so only the speaker differs, not the words or the language.
    other, other_sr = pipeline.tts.synthesize(LJ_TEXT, "en")
    different = speaker.speaker_similarity(other, other_sr, pcm, sr)
    assert different < 0.8 and different < same - 0.2, different


def test_f0_rmse_of_200_vs_210_hz_tone_is_about_10():
    rmse = pitch.f0_rmse_hz(pitch.pitch_track(_tone(210), SR), pitch.pitch_track(_tone(200), SR))
    assert rmse is not None and 9.0 < rmse < 11.0, rmse
    same = pitch.f0_rmse_hz(pitch.pitch_track(_tone(200), SR), pitch.pitch_track(_tone(200), SR))
    assert same is not None and same < 0.5, same
    silence = pitch.pitch_track(np.zeros(SR, np.float32), SR)
    assert pitch.f0_rmse_hz(silence, pitch.pitch_track(_tone(200), SR)) is None  # undefined, not 0


def test_f0_rmse_aligns_speech_in_time_but_not_in_pitch(lj):
    pcm, sr = lj
    pcm = pcm[: 4 * sr]
    track = pitch.pitch_track(pcm, sr)
    # The same speech 300 ms later: DTW (on MFCCs) realigns it, so almost no pitch error remains.
    delayed = pitch.pitch_track(np.concatenate([np.zeros(int(0.3 * sr), np.float32), pcm]), sr)
    # Control: LJ pitch-shifted up 2 semitones (+12 %, ~+25 Hz at her ~200 Hz) must not be aligned away.
    shifted = pitch.pitch_track(librosa.effects.pitch_shift(pcm, sr=sr, n_steps=2), sr)
    close, far = pitch.f0_rmse_hz(delayed, track), pitch.f0_rmse_hz(shifted, track)
    assert close is not None and far is not None
    assert close < 8.0 and far > close + 10.0, (close, far)
    assert track.mean_hz is not None and shifted.mean_hz is not None and shifted.mean_hz > track.mean_hz + 15


def test_spanish_audio_labelled_english_is_incorrect(pipeline):
    text = "Hola, mucho gusto en conocerte. Bienvenidos a mi página."
    pcm, sr = pipeline.tts.synthesize(text, "es")
    whole = [SpokenSegment("es", text, 0.0, pcm.size / sr)]
    heard = language.hear_segments(pipeline.asr, pcm, sr, whole)
    assert heard[0].error_rate < 0.5, heard
    assert language.language_result([h.language for h in heard], ["en"]) == ("ES", 0)
    assert language.language_result([h.language for h in heard], ["es"]) == ("ES", 1)
    # The switch scenario: one wrong segment out of three makes the whole run incorrect.
    assert language.language_result(["en", "zh", "en"], ["en", "zh", "es"]) == ("EN/ZH/EN", 0)
    assert language.language_result(["en", "zh"], ["en", "zh", "es"]) == ("EN/ZH", 0)


@pytest.fixture(scope="module")
def real_render(pipeline, tmp_path_factory):
    path = tmp_path_factory.mktemp("lipsync") / "real.mp4"
    text = "Thanks for stopping by. I build realtime avatars that listen, think and answer."
    pipeline.render_mp4(text, "en", path)
    pcm, sr = load_audio(path)
    return read_frames(path), pcm, sr


def _score(frames: np.ndarray, pcm: np.ndarray, sr: int) -> float:
    envelope = lipsync.frame_envelope(pcm, sr, FPS, len(frames))
    return lipsync.lip_sync_coherence(lipsync.mouth_openness(frames), envelope)


def _mp4_score(path: Path, frames: np.ndarray, pcm: np.ndarray, sr: int) -> float:
    """Write frames + audio as an MP4 and score what decodes from it, as the evaluator does."""
    with Mp4Writer(path, width=frames.shape[2], height=frames.shape[1], sample_rate=sr, fps=FPS) as writer:
        writer.write_audio(pcm)
        writer.write_frames(frames)
    decoded, decoded_sr = load_audio(path)
    return _score(read_frames(path), decoded, decoded_sr)


def test_lip_sync_of_a_still_portrait_with_the_speech_scores_clearly_lower(real_render, pipeline, tmp_path):
    frames, pcm, sr = real_render
    real = _score(frames, pcm, sr)
    # The prepared portrait, never moved, for every frame, under the same speech.
    still = np.repeat(pipeline.prepare_portrait().image[None], len(frames), axis=0)
    assert real > 0.5, real
    assert _mp4_score(tmp_path / "still.mp4", still, pcm, sr) < real - 0.3


def test_lip_sync_of_an_mp4_with_audio_shifted_500_ms_scores_clearly_lower(real_render, tmp_path):
    frames, pcm, sr = real_render
    shift = int(0.5 * sr)
    delayed = np.concatenate([np.zeros(shift, np.float32), pcm[:-shift]])
    real, shifted = _score(frames, pcm, sr), _mp4_score(tmp_path / "shifted.mp4", frames, delayed, sr)
    assert shifted < real - 0.2, (shifted, real)


GOOD = {"run_id": "2026-11-06T01:23:45Z_EN_short", "metrics": {
    "tts_ms": 242, "avatar_render_ms": 1040, "total_generation_ms": 1290, "speaker_similarity": 0.84,
    "f0_rmse_hz": 17.9, "language_detected": "EN", "language_correctness_1_1": 1,
    "lip_sync_coherence_0_1": 0.72}}


@pytest.mark.parametrize(("key", "bad"), [
    ("speaker_similarity", 1.5), ("lip_sync_coherence_0_1", -0.1), ("language_correctness_1_1", 0.5),
    ("tts_ms", "fast"), ("tts_ms", float("nan")), ("total_generation_ms", -1), ("language_detected", "en"),
    ("language_detected", ""), ("f0_rmse_hz", float("inf")), ("language_correctness_1_1", True),
    ("lip_sync_words_0_1", 1.2), ("lip_sync_words_0_1", "good"), ("f0_median_st_vs_reference", float("nan")),
    ("lip_sync_words_parts", {"pause_closed": -0.5}),
])
def test_schema_check_rejects_bad_values(key, bad):
    check_schema(GOOD)
    check_schema({**GOOD, "extra": 1, "metrics": {**GOOD["metrics"], "asr_wer": 0.1}})
    check_schema({**GOOD, "metrics": {**GOOD["metrics"], "lip_sync_words_0_1": None,
                                      "f0_median_st_vs_golden": None, "f0_median_st_vs_reference": -2.5}})
    with pytest.raises(ValueError):
        check_schema({**GOOD, "metrics": {**GOOD["metrics"], key: bad}})


def test_schema_check_rejects_bad_shapes():
    with pytest.raises(ValueError):
        check_schema({"run_id": "x", "metrics": {k: v for k, v in GOOD["metrics"].items() if k != "tts_ms"}})
    with pytest.raises(ValueError):
        check_schema({"metrics": GOOD["metrics"]})
    with pytest.raises(ValueError):
        check_schema({"run_id": "x", "metrics": [1, 2]})


def _strict_json(path: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"{constant} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_real_run_writes_the_exact_shape(tmp_path):
    # Two sessions of one run each: the second must find and use the first's stored pitch baseline.
    args = ["run", "--scenarios", "EN_short", "--repeats", "1", "--output", str(tmp_path)]
    for _ in range(2):
        assert evaluator_main(args) == 0
    documents = [_strict_json(p) for p in sorted(tmp_path.glob("*.json"))]
    assert len(documents) == 2
    for document in documents:
        check_schema(document)
        assert set(METRIC_KEYS) <= set(document["metrics"])
        assert document["run_id"].endswith("Z_EN_short")
        assert document["metrics"]["language_detected"] == "EN"
        assert document["metrics"]["language_correctness_1_1"] == 1
        assert (tmp_path / document["media"]).stat().st_size > 0
    for document in documents:  # the metrics measured against the words and the reference voice
        m = document["metrics"]
        assert m["lip_sync_words_0_1"] is not None and 0.0 <= m["lip_sync_words_0_1"] <= 1.0, m
        assert set(m["lip_sync_words_parts"]) == set(lipsync_words.PARTS)
        assert m["lip_sync_words_matched_share"] > 0.5, m
        assert m["f0_median_st_vs_reference"] is not None and m["voiced_share"] > 0.2, m
    assert documents[0]["metrics"]["f0_rmse_hz"] == 0.0  # the first run is the baseline
    assert documents[1]["metrics"]["f0_rmse_hz"] is not None
    assert len(list((tmp_path / "baselines").glob("EN_short_*.npz"))) == 1
    assert "| EN_short | 1 |" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "trends.png").stat().st_size > 0


def test_cli_refuses_unknown_scenarios(tmp_path, capsys):
    # --target's own errors are tests/test_evaluator_target.py's.
    assert evaluator_main(["run", "--scenarios", "XX", "--output", str(tmp_path)]) == 2
    assert "unknown scenarios" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
