"""Lip sync against the words and pitch against the reference voice: each metric with controls that
would fail if it were broken (evaluator/metrics/lipsync_words.py, phones.py, pitch.py F0Stats).

The positive lip-sync control is a clip whose mouth follows the *known* word timing of its audio: the
audio is built word by word with the bundled TTS, so where each word lies is known by construction (not
from whisper, which the metric uses), and the mouth shape per phoneme is scripted on those spans.
"""

from pathlib import Path

import librosa
import numpy as np
import pytest
import soxr

from engines.avatar.measure import FaceMeter, VideoMeasurement
from engines.media.audio import load_audio
from engines.media.mp4 import Mp4Writer, read_frames
from engines.motion.generator import MotionGenerator
from engines.motion.track import MotionTrack
from evaluator.metrics import lipsync_words as lw
from evaluator.metrics import phones, pitch
from realtime_avatar.pipeline import AvatarPipeline, SpokenSegment

FPS = 25
SCRIPT = [["Good", "morning"], ["we", "need", "more", "food"],
          ["please", "keep", "moving", "to", "the", "blue", "room"]]
TEXT = "Good morning. We need more food. Please keep moving to the blue room."
OTHER_TEXT = "Thanks for stopping by. I build realtime avatars that listen, think and answer."
PAUSE_S, WORD_GAP_S = 0.4, 0.1  # gaps between words: whisper hears them
# mouth_open, mouth_width (-1 round .. 1 spread) per phone class: what a good viseme engine would draw.
SHAPES = {phones.OPEN: (0.75, 0.0), phones.ROUND: (0.4, -1.0), phones.SPREAD: (0.35, 1.0),
          phones.NEUTRAL: (0.3, 0.0), phones.CONSONANT: (0.2, 0.0), phones.BILABIAL: (0.0, 0.0)}


@pytest.fixture(scope="module")
def pipeline():
    return AvatarPipeline()


def _write(path: Path, frames: np.ndarray, pcm: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Through an MP4 and back, as the evaluator reads its runs."""
    with Mp4Writer(path, width=frames.shape[2], height=frames.shape[1], sample_rate=sr, fps=FPS) as writer:
        writer.write_audio(pcm)
        writer.write_frames(frames)
    decoded, decoded_sr = load_audio(path)
    return read_frames(path), decoded, decoded_sr


@pytest.fixture(scope="module")
def scripted(pipeline, tmp_path_factory):
    """(frames, pcm, sr) of a clip whose mouth follows the known timing of each word's phonemes."""
    sr = pipeline.tts.sample_rate
    pieces, spans, t = [np.zeros(int(PAUSE_S * sr), np.float32)], [], PAUSE_S
    piper = pipeline.tts.piper  # the English voice, without its sampling noise: the same clip every run
    for group in SCRIPT:
        for word in group:
            audio = soxr.resample(piper.synthesize(word, variation=0.0), piper.sample_rate, sr)
            audio, _ = librosa.effects.trim(audio, top_db=30)  # the word's span is its sound, no silence
            pieces += [audio.astype(np.float32), np.zeros(int(WORD_GAP_S * sr), np.float32)]
            spans.append((word, t, t + audio.size / sr))
            t += (audio.size + int(WORD_GAP_S * sr)) / sr
        pieces.append(np.zeros(int(PAUSE_S * sr), np.float32))
        t += int(PAUSE_S * sr) / sr
    pcm = np.concatenate(pieces)
    n = int(np.ceil(pcm.size / sr * FPS))
    times = (np.arange(n) + 0.5) / FPS
    target = np.zeros((n, 2), np.float32)
    for word, start, end in spans:
        for phone in lw._spread_over([word], "en", start, end):
            target[(times >= phone.start) & (times < phone.end)] = SHAPES[phone.kind]
    smooth = np.stack([np.convolve(c, np.ones(3) / 3, mode="same") for c in target.T], 1)
    motion = pipeline.new_motion()
    # Blinks, head and breath from the motion engine; the mouth channels replaced by the script.
    base = MotionTrack.concatenate([motion.from_audio(pcm, sr), motion.flush()], FPS).as_array()
    rows = np.zeros((n, base.shape[1]), np.float32)
    rows[: min(n, len(base))] = base[:n]
    rows[:, 0], rows[:, 1] = smooth[:, 0], smooth[:, 1]
    frames = pipeline.renderer.render(pipeline.prepare_portrait(), MotionTrack.from_array(rows, FPS))
    return _write(tmp_path_factory.mktemp("truth") / "scripted.mp4", frames, pcm, sr)


@pytest.fixture(scope="module")
def mouth(scripted):
    return FaceMeter().measure_video(scripted[0])


def _score(pipeline, frames, pcm, sr, text=TEXT, mouth=None) -> lw.LipSyncResult:
    said = [SpokenSegment("en", text, 0.0, pcm.size / sr)]
    result = lw.lip_sync_words(frames, FPS, pcm, sr, said, pipeline.asr, mouth=mouth)
    print(f"{text[:24]!r}: {result}")  # the measured values, for BENCHMARKS (pytest -s)
    return result


def _shift(pcm: np.ndarray, samples: int) -> np.ndarray:
    """Audio ``samples`` later (earlier when negative), same length."""
    if samples >= 0:
        return np.concatenate([np.zeros(samples, np.float32), pcm[: pcm.size - samples]])
    return np.concatenate([pcm[-samples:], np.zeros(-samples, np.float32)])


@pytest.fixture(scope="module")
def good(pipeline, scripted, mouth) -> lw.LipSyncResult:
    frames, pcm, sr = scripted
    return _score(pipeline, frames, pcm, sr, mouth=mouth)


def test_g2p_classes_the_mouth_shapes_of_words():
    kinds = lambda word, lang: [p.kind for p in phones.word_phones(word, lang)]  # noqa: E731
    assert kinds("meet", "en") == [phones.BILABIAL, phones.SPREAD, phones.CONSONANT]
    assert kinds("boom", "en") == [phones.BILABIAL, phones.ROUND, phones.BILABIAL]
    assert phones.ROUND in kinds("mucho", "es") and kinds("mucho", "es")[0] == phones.BILABIAL
    assert kinds("米", "zh") == [phones.BILABIAL, phones.SPREAD]  # mi
    assert kinds("我", "zh")[-1] == phones.ROUND and kinds("大", "zh")[-1] == phones.OPEN  # wo, da
    assert phones.text_words("你好，世界。", "zh") == ["你", "好", "世", "界"]


def test_scoring_follows_the_targets_not_the_mouth_alone():
    cycle = (["open"] * 4 + ["bilabial"] + ["round"] * 4 + ["spread"] * 4) * 4
    labels = np.array(["pause"] * 6 + cycle + ["pause"] * 6, dtype=object)
    shape = {"pause": (0.05, 0.7, 0.3), "open": (0.4, 0.72, 0.5), "bilabial": (0.05, 0.72, 0.3),
             "round": (0.3, 0.62, 0.6), "spread": (0.25, 0.8, 0.35)}
    values = np.array([shape[label] for label in labels], np.float32)
    good = VideoMeasurement(values[:, 0], np.zeros(len(labels)), values[:, 1], values[:, 2])
    result = lw.score_mouth(good, labels, 1.0, FPS)
    assert result.best_lag_ms == 0.0 and result.score is not None and result.score > 0.9, result
    # A closure is judged +-1 frame, vowels too: the vowel frames beside a p/b/m share its minimum.
    assert result.parts["bilabial_closed"] > 0.7 and result.parts["pause_closed"] == 1.0, result
    assert result.parts["timing"] > 0.9 and result.parts["rounded"] == 1.0, result
    # The same mouth against targets 3 frames (120 ms) later: the score drops, and the timing part's
    # correlation peaks where the mouth is (the targets trail it: a negative lag).
    late = lw.score_mouth(good, np.roll(labels, 3), 1.0, FPS)
    assert late.score is not None and late.score < 0.6 and late.best_lag_ms == -120.0, late
    constant = VideoMeasurement(*(np.full(len(labels), 0.3, np.float32) for _ in range(4)))
    assert lw.score_mouth(constant, labels, 1.0, FPS).score == 0.0


def test_snapping_moves_a_boundary_into_the_silence_between_words():
    sr = 1000  # whisper put the boundary 200 ms early, inside the first word's sound
    pcm = np.concatenate([np.ones(500), np.zeros(100), np.ones(400)]).astype(np.float32)
    words = [lw.HeardWord(0.0, 0.3, "one"), lw.HeardWord(0.3, 1.0, "two")]
    snapped = lw.snap_boundaries(words, pcm, sr)
    assert snapped == [lw.HeardWord(0.0, 0.5, "one"), lw.HeardWord(0.6, 1.0, "two")], snapped


def test_a_word_before_a_gap_ends_where_its_sound_does():
    sr = 1000  # whisper ended "one" 200 ms inside its sound; "two" touches "three" (snapping's business)
    pcm = np.concatenate([np.ones(500), np.zeros(300), np.ones(700)]).astype(np.float32)
    words = [lw.HeardWord(0.0, 0.3, "one"), lw.HeardWord(0.8, 1.2, "two"), lw.HeardWord(1.2, 1.4, "three")]
    extended = lw.extend_to_sound(words, pcm, sr)
    assert extended == [lw.HeardWord(0.0, 0.5, "one"), *words[1:2], lw.HeardWord(1.2, 1.5, "three")], extended
    # Never past the next word's start, and never shorter than whisper's word.
    close = [lw.HeardWord(0.0, 0.3, "one"), lw.HeardWord(0.4, 0.5, "two")]
    assert lw.extend_to_sound(close, np.ones(1000, np.float32), sr) == [lw.HeardWord(0.0, 0.4, "one"),
                                                                         lw.HeardWord(0.4, 1.0, "two")]


# Margins on the overall score, from measurements (BENCHMARKS.md "Lip sync to words: the controls"):
# over four scripted sentences (each scored twice: identical) the real clip scored 0.78-0.85, its audio
# shifted +-200 ms 0.00-0.01, a still portrait 0.00, the audio of each other sentence 0.00-0.31 (gap to
# its real clip >= 0.49), a loudness-driven mouth on the same audio 0.58-0.67 (gap 0.17-0.22). Each
# margin leaves at least a third of the smallest measured gap free.
REAL_MIN = 0.6
SHIFT_MARGIN = 0.4
OTHER_MARGIN = 0.3
LOUDNESS_MARGIN = 0.1


def test_a_mouth_following_the_words_scores_high(good):
    assert good.score is not None and good.score > REAL_MIN, good
    # In time, closed in pauses and on p/b/m, wider on i/e and rounder on o/u at an equal jaw opening
    # (the lite renderer's rounded lips: 0.43-0.77 over the four sentences, 0.00 before it drew them).
    assert all(good.parts[key] is not None and good.parts[key] > 0.5
               for key in ("timing", "pause_closed", "bilabial_closed", "spread")), good
    assert good.parts["rounded"] is not None and good.parts["rounded"] > 0.3, good
    assert good.words_matched_share > 0.6 and abs(good.best_lag_ms) <= 1000 / FPS, good


@pytest.mark.parametrize("seconds", [0.2, -0.2])
def test_audio_shifted_200_ms_scores_clearly_lower(pipeline, scripted, mouth, good, tmp_path, seconds):
    frames, pcm, sr = scripted
    f, p, r = _write(tmp_path / "shifted.mp4", frames, _shift(pcm, int(seconds * sr)), sr)
    shifted = _score(pipeline, f, p, r, mouth=mouth)
    assert (shifted.score or 0.0) < good.score - SHIFT_MARGIN, shifted
    # The timing part sees the shift: its correlation peaks ~200 ms away (the mouth leads late audio).
    assert shifted.best_lag_ms is not None and np.sign(shifted.best_lag_ms) == -np.sign(seconds), shifted
    assert abs(shifted.best_lag_ms) >= 100, shifted


def test_a_still_portrait_scores_zero(pipeline, scripted, good, tmp_path):
    frames, pcm, sr = scripted
    f, p, r = _write(tmp_path / "still.mp4", np.repeat(frames[:1], len(frames), axis=0), pcm, sr)
    still = _score(pipeline, f, p, r)
    assert still.score == 0.0 and good.score > REAL_MIN, still


def test_audio_of_another_sentence_scores_clearly_lower(pipeline, scripted, mouth, good, tmp_path):
    frames, pcm, sr = scripted
    piper = pipeline.tts.piper
    other = soxr.resample(piper.synthesize(OTHER_TEXT, variation=0.0), piper.sample_rate, sr)[: pcm.size]
    other = np.pad(other, (0, pcm.size - other.size)).astype(np.float32)
    f, p, r = _write(tmp_path / "other.mp4", frames, other, sr)
    # The words heard are the other sentence's, the mouth moves for this one.
    heard = _score(pipeline, f, p, r, text=OTHER_TEXT, mouth=mouth)
    assert heard.words_matched_share > 0.6 and (heard.score or 0.0) < good.score - OTHER_MARGIN, heard
    # Judged against this video's own text, almost nothing of it is heard.
    assert _score(pipeline, f, p, r, mouth=mouth).words_matched_share < 0.4


def test_a_loudness_driven_mouth_scores_lower_than_one_following_the_words(pipeline, scripted, good,
                                                                            tmp_path):
    _, pcm, sr = scripted
    motion = MotionGenerator(fps=FPS)  # today's loudness engine by name, whatever the default becomes
    track = MotionTrack.concatenate([motion.from_audio(pcm, sr), motion.flush()], FPS)
    loud_frames = pipeline.renderer.render(pipeline.prepare_portrait(), track)
    f, p, r = _write(tmp_path / "loud.mp4", loud_frames, pcm, sr)
    loud = _score(pipeline, f, p, r)
    assert loud.score is not None and loud.score < good.score - LOUDNESS_MARGIN, loud


CONNECTED_TEXT = "Oh, we see the moon from my room. Meet me at noon."
CONNECTED_SHIFT_MARGIN = 0.1  # gaps measured: 0.19-0.63 on six renders, 0.19 / 0.44 here (BENCHMARKS.md)


@pytest.mark.parametrize("seconds", [0.2, -0.2])
def test_connected_speech_shifted_200_ms_scores_lower(pipeline, tmp_path, seconds):
    """Whole sentences (no gaps between words, unlike the scripted clip) with a mouth from the loudness
    engine, which is in time with its audio by construction: its audio moved 200 ms scores lower."""
    piper, sr = pipeline.tts.piper, pipeline.tts.sample_rate
    pcm = soxr.resample(piper.synthesize(CONNECTED_TEXT, variation=0.0), piper.sample_rate, sr)
    pcm = np.concatenate([np.zeros(int(PAUSE_S * sr)), pcm, np.zeros(int(PAUSE_S * sr))]).astype(np.float32)
    motion = MotionGenerator(fps=FPS)
    track = MotionTrack.concatenate([motion.from_audio(pcm, sr), motion.flush()], FPS)
    rendered = pipeline.renderer.render(pipeline.prepare_portrait(), track)
    frames, decoded, decoded_sr = _write(tmp_path / "connected.mp4", rendered, pcm, sr)
    mouth = FaceMeter().measure_video(frames)
    real = _score(pipeline, frames, decoded, decoded_sr, text=CONNECTED_TEXT, mouth=mouth)
    f, p, r = _write(tmp_path / "connected-shifted.mp4", frames, _shift(pcm, int(seconds * sr)), sr)
    shifted = _score(pipeline, f, p, r, text=CONNECTED_TEXT, mouth=mouth)
    assert real.score is not None and abs(real.best_lag_ms) <= 1000 / FPS, real
    assert (shifted.score or 0.0) < real.score - CONNECTED_SHIFT_MARGIN, (real, shifted)


@pytest.fixture(scope="module")
def lj(data_dir):
    return load_audio(data_dir / "LJ001-0001.wav")


def _stats(pcm: np.ndarray, sr: int) -> pitch.F0Stats:
    return pitch.f0_stats(pitch.pitch_track(pcm, sr), pcm, sr)


def test_f0_statistics_same_voice_near_zero_two_semitones_detected(lj):
    pcm, sr = lj
    reference = _stats(pcm, sr)
    assert reference.median_hz is not None and 150 < reference.median_hz < 260  # LJ: a female reader
    assert reference.range_st is not None and reference.range_st > 3 and 0.4 < reference.voiced_share < 1
    # The same voice, 300 ms later and 6 dB quieter: near 0 on every figure.
    same = pitch.compare_stats(_stats(0.5 * np.concatenate([np.zeros(sr * 3 // 10, np.float32), pcm]), sr),
                               reference)
    assert abs(same["median_st"]) < 0.3 and abs(same["range_st"]) < 0.6 and abs(same["voiced_share"]) < 0.05
    for steps in (2, -2):
        moved = pitch.compare_stats(_stats(librosa.effects.pitch_shift(pcm, sr=sr, n_steps=steps), sr),
                                    reference)
        assert abs(moved["median_st"] - steps) < 0.5, (steps, moved)
        assert abs(moved["range_st"]) < 1.0, moved  # shifted, not flattened
    # Silence has no F0: undefined, not 0.
    silent = _stats(np.zeros(sr, np.float32), sr)
    assert silent.median_st is None and pitch.compare_stats(silent, reference)["median_st"] is None


def test_golden_f0_round_trip_flags_a_two_semitone_regression(lj, tmp_path):
    from evaluator.golden import GOLDEN_FILE, load_golden, write_golden

    pcm, sr = lj
    path = tmp_path / "f0.json"
    write_golden("key1", {"LJ": _stats(pcm, sr)}, path)
    golden = load_golden("key1", path)
    assert load_golden("another-config", path) == {}  # other engines or voice: not comparable
    same = pitch.compare_stats(_stats(pcm, sr), golden["LJ"])
    assert abs(same["median_st"]) < 0.1 and abs(same["voiced_share"]) < 0.01, same
    lower = pitch.compare_stats(_stats(librosa.effects.pitch_shift(pcm, sr=sr, n_steps=-2), sr), golden["LJ"])
    assert -2.5 < lower["median_st"] < -1.5, lower
    # The stored golden file is numbers only, for the default configuration's five scenarios.
    import json

    stored = json.loads(GOLDEN_FILE.read_text())
    assert len(stored["scenarios"]) == 5 and all(set(v) == {"median_st", "range_st", "voiced_share"}
                                                 for v in stored["scenarios"].values())
