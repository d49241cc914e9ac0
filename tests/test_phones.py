"""Phone timing from the TTS engines' own duration predictors, and the viseme engine shaping the mouth by it.

The timing is checked against the audio it came with (an "m" is quieter in the oral band than the vowels
around it; the phones lie on the speech, not on the pauses), and the mouth is judged on rendered pixels
at the frames where *whisper's* word timing and the text's G2P put each sound (the lip-sync metric's own
targets), never at the phones that drove it.
"""

import numpy as np
import pytest

from engines.avatar.measure import FaceMeter
from engines.motion import MotionGenerator, MotionTrack
from engines.motion.visemes import VisemeMotionGenerator
from engines.phones import VISEMES, Phone, spans_from_durations, spell_phones
from evaluator.metrics import lipsync_words as lw
from evaluator.metrics import phones as g2p
from realtime_avatar.pipeline import AvatarPipeline, SpokenSegment

FPS = 25
SENTENCE = "Oh, we see the moon from my room. Meet me at noon."


@pytest.fixture(scope="module")
def pipeline() -> AvatarPipeline:
    return AvatarPipeline()


def test_marks_join_their_sound_diphthongs_split_and_gaps_drop():
    symbols = ["^", "ˈ", "O", ",", " ", "m", "a", "↗", "ː", "$"]
    spans = spans_from_durations([2, 1, 4, 1, 2, 2, 3, 1, 1, 2], 0.025)
    phones = spell_phones(symbols, spans)
    assert [p.symbol for p in phones] == ["o", "ʊ", "m", "a"]
    oh, oo, m, a = phones
    assert oh.start_s == pytest.approx(0.05) and oo.end_s == pytest.approx(0.175)  # stress goes forward
    assert oh.end_s == pytest.approx(oo.start_s) == pytest.approx(0.1125)  # the diphthong's middle
    assert m.start_s == pytest.approx(0.25) and a.end_s == pytest.approx(0.425)  # tone and length backward
    assert VISEMES["m"].closed and VISEMES["u"].width < 0 < VISEMES["i"].width


def _oral_db(pcm: np.ndarray, sr: int, start: float, end: float) -> float:
    piece = pcm[int(start * sr):int(end * sr)]
    spectrum = np.abs(np.fft.rfft(piece * np.hanning(piece.size))) ** 2
    freqs = np.fft.rfftfreq(piece.size, 1 / sr)
    return float(10 * np.log10(spectrum[(freqs > 400) & (freqs < 4000)].sum() / piece.size**2 + 1e-12))


@pytest.mark.parametrize(("language", "text", "voice"),
                         [("en", "Mama made me a lemon mousse.", "male"),   # Piper
                          ("en", "Mama made me a lemon mousse.", "female"),  # Kokoro
                          ("es", "Mi mamá come mucho melón.", "male")])      # Kokoro
def test_tts_phones_lie_on_their_audio(pipeline, language, text, voice):
    from engines.tts.bundled import BundledTTS

    tts = BundledTTS(default_voice=voice)
    chunks = list(tts.stream(text, language))
    assert all(chunk.phones for chunk in chunks), "the bundled voices know their timing"
    for chunk in chunks:
        sr, seconds = chunk.sample_rate, chunk.pcm.size / chunk.sample_rate
        starts = [p.start_s for p in chunk.phones]
        assert starts == sorted(starts) and chunk.phones[0].start_s >= 0 and chunk.phones[-1].end_s <= seconds
        # The clause's trailing pause (the chunk's last 0.25 s) carries no phone.
        assert chunk.phones[-1].end_s <= seconds - tts.sentence_pause + 0.05
        inside = [p for p in chunk.phones if p.end_s - p.start_s >= 0.03]
        nasal = [_oral_db(chunk.pcm, sr, p.start_s, p.end_s) for p in inside if p.symbol == "m"]
        vowels = [_oral_db(chunk.pcm, sr, p.start_s, p.end_s) for p in inside if p.symbol in "aeiouɛɪʊəʌæ"]
        assert len(nasal) >= 3 and len(vowels) >= 4
        # m leaves through the nose: its oral band is well below the vowels' (a shifted timing blurs this).
        assert np.median(vowels) - np.median(nasal) > 6.0, (nasal, vowels)


@pytest.fixture(scope="module")
def spoken():
    """The sentence's chunks from the bundled female voice (Kokoro: no sampling noise, the same audio
    every run; Piper samples its noise anew on every call)."""
    from engines.tts.bundled import BundledTTS

    return list(BundledTTS(default_voice="female").stream(SENTENCE, "en"))



def _tracks(chunks, engine: type, with_phones: bool, chunked: bool = False):
    generator = engine()
    parts = []
    for chunk in chunks:
        phones = chunk.phones if with_phones else ()
        if not chunked:
            parts.append(generator.from_audio(chunk.pcm, chunk.sample_rate, phones))
            continue
        cut = chunk.pcm.size // 3 + 7  # a partial frame carried, the phones all given with the first piece
        parts.append(generator.from_audio(chunk.pcm[:cut], chunk.sample_rate, phones))
        parts.append(generator.from_audio(chunk.pcm[cut:], chunk.sample_rate))
    parts.append(generator.flush())
    pcm = np.concatenate([chunk.pcm for chunk in chunks])
    return MotionTrack.concatenate(parts), pcm, chunks[0].sample_rate


def test_phones_given_with_a_chunk_apply_however_it_is_cut(spoken):
    whole, _, _ = _tracks(spoken, VisemeMotionGenerator, True)
    cut, _, _ = _tracks(spoken, VisemeMotionGenerator, True, chunked=True)
    np.testing.assert_allclose(cut.as_array(), whole.as_array(), atol=1e-6)


def test_phones_round_spread_and_close_the_rendered_mouth_where_the_words_say(pipeline, spoken):
    """At the frames whisper + G2P give to o/u, i/e and m/b/p: the mouth drawn from the TTS's phones is
    narrower on the rounded vowels than on the spread ones and shut at each bilabial (within a frame, the
    metric's tolerance); the audio-only engines (no phones) separate them less, and the score to words is
    no worse for it. Measured on rendered pixels (dlib landmarks). Measured (2026-12-02): round/spread width
    0.667/0.759 with phones, 0.694/0.750 audio only, 0.679/0.724 loudness; p/b/m 0.086, pauses 0.095, vowels
    0.344; score 0.672 / 0.615 / 0.389."""
    portrait = pipeline.prepare_portrait()
    results = {}
    for name, engine, with_phones in (("loudness", MotionGenerator, False),
                                      ("visemes, audio only", VisemeMotionGenerator, False),
                                      ("visemes, phones", VisemeMotionGenerator, True)):
        track, pcm, sr = _tracks(spoken, engine, with_phones)
        frames = pipeline.renderer.render(portrait, track)
        mouth = FaceMeter().measure_video(frames)
        said = [SpokenSegment("en", SENTENCE, 0.0, pcm.size / sr)]
        labels, _ = lw.speech_targets(pcm, sr, said, pipeline.asr, len(frames), FPS)
        width, opened = np.asarray(mouth.mouth_width), np.asarray(mouth.mouth_open)
        results[name] = {
            "round_w": float(np.median(width[labels == g2p.ROUND])),
            "spread_w": float(np.median(width[labels == g2p.SPREAD])),
            # Each p/b/m at the frame the metric judges (the least open within a frame of it).
            "bilabial_open": float(np.median(opened[lw.closure_frames(opened, labels == g2p.BILABIAL)])),
            "vowel_open": float(np.median(opened[np.isin(labels, [g2p.OPEN, g2p.ROUND, g2p.SPREAD])])),
            "pause_open": float(np.median(opened[labels == lw.PAUSE])),
            "score": lw.score_mouth(mouth, labels, 1.0, FPS).score,
        }
    print(results)
    phones = results["visemes, phones"]
    assert phones["spread_w"] - phones["round_w"] > 0.04, phones
    assert phones["bilabial_open"] < phones["vowel_open"] - 0.1, phones
    assert phones["bilabial_open"] < phones["pause_open"] + 0.03, phones
    assert phones["score"] > results["loudness"]["score"] + 0.1, results
    assert phones["score"] > results["visemes, audio only"]["score"] - 0.02, results
    for other in ("loudness", "visemes, audio only"):
        assert (phones["spread_w"] - phones["round_w"]
                > results[other]["spread_w"] - results[other]["round_w"] + 0.02), results


def test_no_phones_means_the_audio_alone_decides(spoken):
    """A TTS that does not know its timing (XTTS) gives no phones: the engine is the audio-only one."""
    with_none, _, _ = _tracks(spoken, VisemeMotionGenerator, False)
    generator = VisemeMotionGenerator()
    parts = [generator.from_audio(c.pcm, c.sample_rate, [Phone("?", 0.0, 0.1)]) for c in spoken]
    unknown = MotionTrack.concatenate([*parts, generator.flush()])
    # A symbol with no viseme shapes nothing.
    np.testing.assert_allclose(unknown.as_array(), with_none.as_array(), atol=1e-6)
