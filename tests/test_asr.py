"""ASR engine: the bundled whisper base model is assembled and verified, and transcribes real speech."""

import os

import numpy as np
import pytest
import soxr

from engines.asr import WhisperASR, ensure_base_model
from engines.asr.bundled import MODEL_BIN_SHA256, MODEL_BIN_SIZE, sha256_file
from engines.asr.metrics import char_error_rate, error_rate, normalize, word_error_rate
from engines.errors import InvalidAudioError, ModelUnavailableError, UnsupportedLanguageError
from tests import sounds

LJ001_0001 = (
    "Printing, in the only sense with which we are at present concerned, differs from most if not "
    "from all the arts and crafts represented in the Exhibition"
)


def test_bundled_model_is_assembled_verified_and_reused(tmp_path):
    model_dir = ensure_base_model(tmp_path / "whisper-base", verify=True)
    model_bin = model_dir / "model.bin"
    assert model_bin.stat().st_size == MODEL_BIN_SIZE
    assert sha256_file(model_bin) == MODEL_BIN_SHA256
    assert {p.name for p in model_dir.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }

    first_inode = model_bin.stat().st_ino
    ensure_base_model(model_dir)
    assert model_bin.stat().st_ino == first_inode  # not rewritten

    with model_bin.open("r+b") as handle:  # a truncated file (crash, full disk) is rebuilt
        handle.truncate(1000)
    ensure_base_model(model_dir)
    assert model_bin.stat().st_size == MODEL_BIN_SIZE and sha256_file(model_bin) == MODEL_BIN_SHA256


def test_corrupt_model_of_right_size_is_caught_by_verify(tmp_path):
    model_dir = ensure_base_model(tmp_path / "m")
    with (model_dir / "model.bin").open("r+b") as handle:
        handle.seek(12345)
        handle.write(b"\x00" * 64)
    ensure_base_model(model_dir, verify=True)
    assert sha256_file(model_dir / "model.bin") == MODEL_BIN_SHA256
    assert not [p for p in os.listdir(model_dir) if p.startswith(".")]  # no temp files left


def test_transcribes_english_fixture_with_word_timestamps(asr, lj_speech):
    pcm, sample_rate = lj_speech
    result = asr.transcribe(pcm, sample_rate)
    assert result.language == "en" and result.language_probability > 0.5
    assert word_error_rate(LJ001_0001, result.text, "en") <= 0.1
    words = [w for s in result.segments for w in s.words]
    assert len(words) >= 20
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(0.0 <= w.start <= w.end <= result.duration + 0.5 for w in words)
    assert words[0].word.lower().startswith("printing")


def test_stereo_44k_int16_input_is_downmixed_and_resampled(asr, lj_speech):
    pcm, sample_rate = lj_speech
    high = soxr.resample(pcm, sample_rate, 44_100)
    stereo = (np.stack([high, high], axis=1) * 32767).astype(np.int16)
    result = asr.transcribe(stereo, 44_100, language="en")
    assert result.language == "en"
    assert word_error_rate(LJ001_0001, result.text, "en") <= 0.1


@pytest.mark.parametrize(
    "pcm",
    [np.zeros(0, np.float32), np.full(16_000, np.nan, np.float32), np.zeros((2, 2, 2), np.float32)],
    ids=["empty", "nan", "3d"],
)
def test_bad_audio_is_an_input_error(asr, pcm):
    with pytest.raises(InvalidAudioError):
        asr.transcribe(pcm, 16_000)


def test_unknown_language_and_missing_model_are_clear_errors(asr, tmp_path):
    with pytest.raises(UnsupportedLanguageError):
        asr.transcribe(np.zeros(16_000, np.float32), 16_000, language="xx")
    with pytest.raises(ModelUnavailableError, match="small"):
        WhisperASR(model="small").load()
    with pytest.raises(ModelUnavailableError):
        WhisperASR(model=str(tmp_path)).load()


def test_metrics_normalise_case_punctuation_script_and_digits():
    assert normalize("Hello, it's GREAT!") == "hello its great"
    assert word_error_rate("Hello, it's great to meet you.", "hello its great to meet you") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5
    # whisper often writes traditional characters and Arabic digits for Mandarin speech
    assert char_error_rate("你好，很高兴认识你。", "你好很高興認識你", "zh") == 0.0
    assert char_error_rate("我有三个问题", "我有3個問題", "zh") == 0.0
    assert error_rate("欢迎来到我的主页", "欢迎来到我的主业", "zh") == pytest.approx(1 / 8)
    assert error_rate("anything", "", "en") == 1.0


# --- silence is silence (issue 15, item 7): faster-whisper's VAD gates what whisper hears -------------


def test_vad_is_on_by_default_in_the_config_and_the_engine():
    from realtime_avatar.config import Settings

    assert Settings(profile="cpu").asr.options["vad_filter"] is True
    assert Settings(profile="l4").asr.options["vad_filter"] is True
    assert WhisperASR().vad_filter is True


@pytest.mark.parametrize("kind", ["silence", "white_noise", "quiet_noise", "music"])
def test_silence_noise_and_music_give_empty_text(asr, kind):
    rate = 16_000
    pcm = {
        "silence": lambda: np.zeros(5 * rate, np.float32),
        "white_noise": lambda: sounds.noise(5.0, rate=rate),
        "quiet_noise": lambda: np.random.default_rng(7).normal(0, 0.01, 5 * rate).astype(np.float32),
        "music": lambda: sounds.music(5.0, rate=rate),
    }[kind]()
    result = asr.transcribe(pcm, rate)
    assert result.text == "", result.text
    assert result.segments == []


def test_speech_is_still_transcribed_with_vad(asr, lj_speech):
    pcm, rate = lj_speech
    assert asr.vad_filter
    text = normalize(asr.transcribe(pcm, rate, language="en").text)
    assert "printing" in text and "arts" in text, text


@pytest.mark.parametrize("seconds", [3.0, 9.7])
def test_detecting_the_language_encodes_a_short_utterance_once(asr, lj_speech, seconds):
    """Auto language reuses detection's encoder output for decoding, with the transcript faster-whisper
    gives when it encodes twice (engines/asr/one_encode.py)."""
    from faster_whisper import WhisperModel

    pcm, sample_rate = lj_speech
    clip = soxr.resample(pcm, sample_rate, 16_000).astype(np.float32)[: int(seconds * 16_000)]
    asr.load()
    model = asr._whisper
    encoded = []
    original = WhisperModel.encode

    def counting(self, features):
        encoded.append(features.shape)
        return original(self, features)

    plain = WhisperModel(str(asr.model_dir()), device="cpu", compute_type="int8", cpu_threads=asr.cpu_threads)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WhisperModel, "encode", counting)
        reused = asr.transcribe(clip, 16_000)
        assert len(encoded) == 1, encoded  # detection's pass served decoding too
        encoded.clear()
        segments, info = plain.transcribe(clip, beam_size=asr.beam_size, word_timestamps=True,
                                          vad_filter=asr.vad_filter)
        text = "".join(s.text for s in segments).strip()
        assert len(encoded) == 2  # what the stock model does: the reason for the subclass
    assert (reused.language, reused.text) == (info.language, text)
    assert reused.language_probability == pytest.approx(info.language_probability, abs=0.01)
    assert model._last is None  # the cached output is not held after the call
