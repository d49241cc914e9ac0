"""Bundled TTS judged by ear, i.e. by whisper: each language must be recognised as itself and understood.

Thresholds are the project's acceptance criteria: whisper-base language ID equals the requested
language, WER <= 0.25 (en, es) and CER <= 0.30 (zh) on the round trip.
"""

import time

import numpy as np
import pytest

from engines.asr.metrics import error_rate
from engines.errors import (
    AudioTooShortError,
    EmptyTextError,
    InputError,
    InvalidAudioError,
    TextTooLongError,
    UnsupportedLanguageError,
)
from engines.tts import BundledTTS, Voice

MAX_ERROR = {"en": 0.25, "es": 0.25, "zh": 0.30}
SCENARIOS = {
    "en": "Hello, it's great to meet you.",
    "zh": "你好，很高兴认识你。",
    "es": "Hola, mucho gusto en conocerte.",
}
MORE = {
    "en": "Ask me anything about my work, and I will do my best to reply quickly and clearly.",
    "zh": "欢迎来到我的主页，有什么问题都可以问我。",
    "es": "Bienvenidos a mi página. Construyo avatares que pueden escuchar, pensar y responder.",
}
SWITCH = "Hello, welcome to my page. 欢迎来到我的主页。 Bienvenidos a mi página."


@pytest.fixture(scope="module")
def tts() -> BundledTTS:
    engine = BundledTTS()
    engine.load()
    return engine


@pytest.fixture(scope="module")
def female(tts, lj_speech) -> Voice:
    return tts.prepare_voice(*lj_speech)


def _round_trip(tts, asr, text, language, voice):
    pcm, sample_rate = tts.synthesize(text, language, voice)
    heard = asr.transcribe(pcm, sample_rate)
    return heard, error_rate(text, heard.text, language)


@pytest.mark.parametrize("voice_kind", ["default", "female-reference"])
@pytest.mark.parametrize("language", list(SCENARIOS))
def test_scenario_round_trip(tts, asr, female, language, voice_kind):
    voice = female if voice_kind == "female-reference" else None
    heard, err = _round_trip(tts, asr, SCENARIOS[language], language, voice)
    assert heard.language == language, heard
    assert err <= MAX_ERROR[language], heard.text


@pytest.mark.parametrize("language", list(MORE))
def test_longer_sentences_round_trip(tts, asr, female, language):
    heard, err = _round_trip(tts, asr, MORE[language], language, female)
    assert heard.language == language
    assert err <= MAX_ERROR[language], heard.text


def test_switch_script_speaks_each_sentence_in_its_language(tts, asr, female):
    chunks = list(tts.stream(SWITCH, "auto", female))
    assert [c.language for c in chunks] == ["en", "zh", "es"]
    for chunk in chunks:
        heard = asr.transcribe(chunk.pcm, chunk.sample_rate)
        assert heard.language == chunk.language, heard
        assert error_rate(chunk.text, heard.text, chunk.language) <= MAX_ERROR[chunk.language], heard.text


def test_stream_yields_clause_chunks_lazily(tts):
    text = (
        "Thanks for stopping by. I build realtime avatars that can listen, think and answer in three "
        "languages. Ask me anything about my work, and I will do my best to reply quickly and clearly."
    )
    started = time.perf_counter()
    stream = tts.stream(text, "en")
    first = next(stream)
    first_latency = time.perf_counter() - started
    rest = list(stream)
    total = time.perf_counter() - started
    chunks = [first, *rest]
    assert len(chunks) >= 4 and first.text == "Thanks for stopping by."
    assert first_latency < total / 2
    for chunk in chunks:
        assert chunk.pcm.dtype == np.float32 and chunk.pcm.ndim == 1
        assert chunk.sample_rate == tts.sample_rate == 24_000 and chunk.language == "en"
        assert np.isfinite(chunk.pcm).all() and np.abs(chunk.pcm).max() <= 1.0
        assert np.abs(chunk.pcm).max() > 0.05  # speech, not silence
    pcm, sample_rate = tts.synthesize(text, "en")
    # Piper samples its durations (VITS noise), so a second run differs by a few samples.
    assert sample_rate == 24_000 and pcm.size == pytest.approx(sum(c.pcm.size for c in chunks), rel=0.1)


def test_bad_requests_fail_before_any_audio(tts):
    with pytest.raises(EmptyTextError):
        tts.stream("  ", "en")
    with pytest.raises(UnsupportedLanguageError):
        tts.stream("Bonjour", "fr")
    with pytest.raises(TextTooLongError):
        tts.stream("好" * 401, "zh")
    foreign = Voice("0" * 64, "xtts-v2", 3.0, {})
    with pytest.raises(InputError, match="xtts-v2"):
        tts.stream("Hello.", "en", foreign)


@pytest.mark.parametrize(
    ("pcm", "error"),
    [
        (b"RIFF not decoded samples", InvalidAudioError),
        (np.array(["a", "b"]), InvalidAudioError),
        (np.full(48_000, np.nan, np.float32), InvalidAudioError),
        (np.zeros(48_000, np.float32), InvalidAudioError),
        (np.zeros((2, 2, 24_000), np.float32), InvalidAudioError),
        (
            np.random.default_rng(0).uniform(-0.5, 0.5, 24_000 * 19 // 10).astype(np.float32),
            AudioTooShortError,
        ),
    ],
    ids=["bytes", "strings", "nan", "silence", "3d", "1.9s"],
)
def test_prepare_voice_rejects_bad_references(tts, pcm, error):
    with pytest.raises(error):
        tts.prepare_voice(pcm, 24_000)


def test_voice_is_cached_by_content_and_serialises(tts, lj_speech, female):
    pcm, sample_rate = lj_speech
    again = tts.prepare_voice(pcm.copy(), sample_rate)
    assert again is female and tts.cached_voice(female.voice_id) is female
    assert len(female.voice_id) == 64 and female.engine == "bundled"
    assert female.duration == pytest.approx(pcm.size / sample_rate)
    stereo = tts.prepare_voice(np.stack([pcm, pcm], axis=1), sample_rate)  # same samples, downmixed
    assert stereo.voice_id == female.voice_id
    other = tts.prepare_voice(pcm[: sample_rate * 3], sample_rate)
    assert other.voice_id != female.voice_id
    assert Voice.from_dict(female.to_dict()) == female
    assert Voice.from_bytes(female.to_bytes()) == female


def test_presets_follow_reference_pitch(tts, female):
    # LJSpeech is a female voice (~210 Hz): every language gets a female preset.
    assert female.conditioning["f0"] > 165
    assert all(tts.preset_for(lang, female).f0 > 165 for lang in ("en", "zh", "es"))
    # A low harmonic voice (110 Hz, with vibrato so it is not a pure tone) gets the male presets.
    sample_rate = 16_000
    t = np.arange(sample_rate * 3) / sample_rate
    phase = 2 * np.pi * np.cumsum(110 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))) / sample_rate
    low = sum(np.sin(k * phase) / k for k in range(1, 8)).astype(np.float32) * 0.3
    male = tts.prepare_voice(low, sample_rate)
    assert 100 < male.conditioning["f0"] < 120
    assert all(tts.preset_for(lang, male).f0 < 165 for lang in ("en", "zh", "es"))


def test_phoneme_strings_longer_than_the_model_context_are_cut_at_word_spaces():
    from engines.tts.kokoro import MAX_TOKENS, _split_tokens

    space = 16
    tokens = ([1, 2, 3, 4, space] * 250)[:-1]
    pieces = _split_tokens(tokens, space)
    assert [t for p in pieces for t in p] == tokens
    assert all(len(p) <= MAX_TOKENS for p in pieces) and len(pieces) == 3
    assert all(p[-1] == space for p in pieces[:-1])
