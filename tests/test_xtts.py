"""XTTS-v2 engine: coqui's real loading, conditioning and streaming code on a self-made checkpoint.

The checkpoint is random-weight (a 2-layer, 128-wide GPT; coqui's full-size HiFi-GAN decoder and speaker
encoder), saved in the official layout and loaded strictly through the engine's normal path. Random
weights say nothing about voice quality: these tests check the plumbing (files, shapes, sample rate,
streaming, caching, language codes, per-call limits), not how it sounds.
"""

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from engines.errors import AudioTooShortError, InputError, ModelUnavailableError
from engines.tts import Voice
from engines.tts.xtts import XTTSEngine
from engines.tts.xtts.engine import CHAR_LIMITS, REQUIRED_FILES
from engines.tts.xtts.random_checkpoint import SMALL_ARGS, write_random_checkpoint
from engines.tts.xtts.torchaudio_compat import MelSpectrogram, ensure_torchaudio, melscale_fbanks, resample

VOCAB = Path(__file__).resolve().parent / "data" / "xtts_vocab.json"
LATENT_DIM = SMALL_ARGS["gpt_n_model_channels"]  # 1024 in the release checkpoint
SENTENCES = {
    "en": "Hello, it's great to meet you.",
    "zh": "你好，很高兴认识你。",
    "es": "Hola, mucho gusto en conocerte.",
}


@pytest.fixture(scope="module")
def xtts_class() -> type:
    """coqui's Xtts, imported as the engine does (not at collection: the stand-in is process-wide)."""
    ensure_torchaudio()
    from TTS.tts.models.xtts import Xtts

    return Xtts


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("models") / "xtts-v2", VOCAB)


@pytest.fixture(scope="module")
def latents_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("latents")


@pytest.fixture(scope="module")
def engine(checkpoint, latents_dir) -> XTTSEngine:
    return XTTSEngine(checkpoint, cache_dir=latents_dir)


@pytest.fixture(scope="module")
def voice(engine, lj_speech) -> Voice:
    return engine.prepare_voice(*lj_speech)


@pytest.fixture
def calls(monkeypatch, xtts_class) -> dict[str, int]:
    """Counts the model calls that compute conditioning (the expensive part a cache hit must skip)."""
    counts = {"get_gpt_cond_latents": 0, "get_speaker_embedding": 0}
    for name in counts:
        original = getattr(xtts_class, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(xtts_class, name, counted)
    return counts


@pytest.fixture
def fake_stream(monkeypatch, xtts_class) -> list[tuple[str, str, torch.Tensor]]:
    """Replaces the GPT + decoder with 0.1 s of noise per call, recording (text, language, latent)."""
    seen: list[tuple[str, str, torch.Tensor]] = []

    def inference_stream(self, text, language, gpt_cond_latent, speaker_embedding, **kwargs):
        seen.append((text, language, gpt_cond_latent))
        yield torch.rand(2400) - 0.5

    monkeypatch.setattr(xtts_class, "inference_stream", inference_stream)
    return seen


def test_checkpoint_loads_strictly_in_the_official_layout(checkpoint, engine):
    assert sorted(p.name for p in checkpoint.iterdir()) == sorted(REQUIRED_FILES)
    saved = torch.load(checkpoint / "model.pth", weights_only=True)["model"]
    assert not engine.loaded  # lazy: nothing loaded until first use
    engine.load()
    model = engine._model
    assert engine.loaded and model.gpt.layers == SMALL_ARGS["gpt_layers"]
    assert model.tokenizer.get_number_tokens() == model.gpt.text_embedding.num_embeddings
    # Every saved tensor is in the model, unchanged: the weights were loaded, not re-initialised.
    loaded = model.state_dict()
    for key in ("gpt.text_embedding.weight", "hifigan_decoder.waveform_decoder.conv_pre.weight"):
        assert torch.equal(loaded[key], saved[key])


def test_release_format_model_file_loads_without_being_rewritten(
    checkpoint, tmp_path, monkeypatch, xtts_class
):
    from TTS.tts.configs.xtts_config import XttsArgs, XttsAudioConfig, XttsConfig

    for name in ("config.json", "vocab.json"):
        shutil.copy(checkpoint / name, tmp_path / name)
    config = XttsConfig()
    config.load_json(str(checkpoint / "config.json"))
    state = torch.load(checkpoint / "model.pth", weights_only=True)["model"]
    # The release pickles its config object, two of its classes under their old module (the names
    # coqui's _legacy_safe_globals re-creates), so a plain weights-only load refuses it.
    with monkeypatch.context() as patch:
        for cls in (XttsArgs, XttsAudioConfig):
            patch.setattr(cls, "__module__", "TTS.tts.models.xtts")
        torch.save({"config": config, "model": state}, tmp_path / "model.pth")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "model.pth", weights_only=True)
    released = (tmp_path / "model.pth").read_bytes()
    engine = XTTSEngine(tmp_path, cache_dir=tmp_path / "latents")
    engine.load()
    assert engine.loaded
    # coqui's own reader saves a converted copy over it: recorded sizes and hashes would stop matching.
    assert (tmp_path / "model.pth").read_bytes() == released


def test_checkpoint_with_a_missing_tensor_is_refused(checkpoint, tmp_path):
    for name in ("config.json", "vocab.json"):
        shutil.copy(checkpoint / name, tmp_path / name)
    state = torch.load(checkpoint / "model.pth", weights_only=True)
    del state["model"]["gpt.final_norm.weight"]
    torch.save(state, tmp_path / "model.pth")
    with pytest.raises(ModelUnavailableError, match=r"gpt\.final_norm\.weight") as err:
        XTTSEngine(tmp_path).load()
    assert "avatar models fetch xtts-v2" in str(err.value)


def test_missing_model_file_names_it_and_the_fetch_command(checkpoint, tmp_path, monkeypatch, xtts_class):
    for name in ("config.json", "vocab.json"):
        shutil.copy(checkpoint / name, tmp_path / name)
    monkeypatch.setattr(xtts_class, "__init__", lambda *a, **k: pytest.fail("the model must not be built"))
    with pytest.raises(ModelUnavailableError) as err:
        XTTSEngine(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "model.pth") in message and "avatar models fetch xtts-v2" in message
    assert "config.json" not in message  # only what is missing is named


def test_options_are_checked(checkpoint):
    with pytest.raises(ValueError, match="cuda"):
        XTTSEngine(checkpoint, fp16=True)
    with pytest.raises(ValueError, match="cuda"):
        XTTSEngine(checkpoint, use_deepspeed=True)
    with pytest.raises(ValueError, match="device"):
        XTTSEngine(checkpoint, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelUnavailableError, match="CUDA"):
            XTTSEngine(checkpoint, device="cuda").load()


def test_voice_latents_are_computed_once_then_read_from_disk(
    checkpoint, engine, latents_dir, lj_speech, calls
):
    pcm, sample_rate = lj_speech
    clip = pcm[: 5 * sample_rate]  # a clip no other test prepares
    before = len(list(latents_dir.rglob("*.npz")))
    first = engine.prepare_voice(clip, sample_rate)
    assert calls == {"get_gpt_cond_latents": 1, "get_speaker_embedding": 1}
    latent, embedding = first.conditioning["gpt_cond_latent"], first.conditioning["speaker_embedding"]
    assert latent.shape == (1, 32, LATENT_DIM) and embedding.shape == (1, 512, 1)
    assert np.isfinite(latent).all() and np.isfinite(embedding).all()
    assert len(list(latents_dir.rglob("*.npz"))) == before + 1

    # A new engine (empty memory cache, model not loaded) finds the latents on disk.
    fresh = XTTSEngine(checkpoint, cache_dir=latents_dir)
    again = fresh.prepare_voice(clip, sample_rate)
    assert calls == {"get_gpt_cond_latents": 1, "get_speaker_embedding": 1}
    assert not fresh.loaded
    assert again.voice_id == first.voice_id
    assert np.array_equal(again.conditioning["gpt_cond_latent"], latent)
    assert np.array_equal(again.conditioning["speaker_embedding"], embedding)

    # The key covers the sample rate: the same samples at another rate are another voice.
    engine.prepare_voice(clip, sample_rate * 2)
    assert calls["get_gpt_cond_latents"] == 2


def test_a_deleted_voice_leaves_no_latents(checkpoint, engine, latents_dir, lj_speech, calls):
    """DELETE /v1/voices reaches the engine: its memory entry and cached latents go (issue 15)."""
    pcm, sample_rate = lj_speech
    clip = pcm[sample_rate: 4 * sample_rate]  # a clip no other test prepares
    voice = engine.prepare_voice(clip, sample_rate)
    cached = engine._latents_path(voice.voice_id)
    assert cached.is_file() and engine.cached_voice(voice.voice_id) is voice
    engine.forget_voice(voice)
    assert not cached.exists() and engine.cached_voice(voice.voice_id) is None
    engine.prepare_voice(clip, sample_rate)  # computed again, not read back
    assert calls["get_gpt_cond_latents"] == 2
    assert engine.purge_cache(3600) == 0 and cached.is_file()
    old = time.time() - 7200
    os.utime(cached, (old, old))
    assert engine.purge_cache(3600) >= 1 and not cached.exists()


def test_a_fresh_process_clones_and_speaks(checkpoint, tmp_path, data_dir):
    """The production path, with nothing imported beforehand (here earlier tests set torchaudio up)."""
    script = textwrap.dedent(f"""
        import soundfile as sf
        from engines.tts.xtts import XTTSEngine
        engine = XTTSEngine({str(checkpoint)!r}, cache_dir={str(tmp_path)!r})
        pcm, rate = sf.read({str(data_dir / "LJ001-0001.wav")!r}, dtype="float32")
        chunk = next(engine.stream("Hello there.", "en", engine.prepare_voice(pcm[: 3 * rate], rate)))
        print(chunk.sample_rate, chunk.pcm.size > 0)
    """)
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=repo
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["24000", "True"]


def test_reference_audio_is_validated_like_the_bundled_engine(engine, lj_speech):
    pcm, sample_rate = lj_speech
    with pytest.raises(AudioTooShortError):
        engine.prepare_voice(pcm[:sample_rate], sample_rate)
    with pytest.raises(InputError):
        engine.prepare_voice(np.zeros(3 * sample_rate, np.float32), sample_rate)


@pytest.mark.parametrize("language", ["en", "zh", "es"])
def test_stream_yields_24k_chunks_in_each_language(engine, voice, language, monkeypatch, xtts_class):
    seen: list[tuple[str, str]] = []
    original = xtts_class.inference_stream

    def recorded(self, text, lang, *args, **kwargs):
        seen.append((text, lang))
        assert kwargs["stream_chunk_size"] == 20
        yield from original(self, text, lang, *args, **kwargs)

    monkeypatch.setattr(xtts_class, "inference_stream", recorded)
    torch.manual_seed(0)
    chunks = list(engine.stream(SENTENCES[language], language, voice))
    assert seen == [(SENTENCES[language], {"en": "en", "zh": "zh-cn", "es": "es"}[language])]
    *speech, pause = chunks
    # The small model stops after 27 tokens: streamed as 20 + 7, i.e. audio before the clause is done.
    assert len(speech) >= 2
    for chunk in chunks:
        assert chunk.sample_rate == 24_000 and chunk.language == language
        assert chunk.pcm.dtype == np.float32 and chunk.pcm.ndim == 1 and np.isfinite(chunk.pcm).all()
    assert all(c.pcm.size > 0 and np.abs(c.pcm).max() > 0 for c in speech)
    assert [c.text for c in speech] == [SENTENCES[language]] + [""] * (len(speech) - 1)
    assert pause.text == "" and not pause.pcm.any() and pause.pcm.size == int(0.25 * 24_000)


def test_synthesize_is_the_drained_stream(engine, voice):
    torch.manual_seed(1)
    streamed = np.concatenate([c.pcm for c in engine.stream(SENTENCES["en"], "en", voice)])
    torch.manual_seed(1)
    audio, sample_rate = engine.synthesize(SENTENCES["en"], "en", voice)
    assert sample_rate == 24_000 and np.array_equal(audio, streamed)


def test_auto_language_is_detected_per_sentence(engine, voice, fake_stream):
    text = "Hello, welcome to my page. 欢迎来到我的主页。 Bienvenidos a mi página."
    chunks = list(engine.stream(text, "auto", voice))
    assert [language for _, language, _ in fake_stream] == ["en", "zh-cn", "es"]
    assert [c.language for c in chunks if c.text] == ["en", "zh", "es"]


def test_long_text_is_split_within_the_per_call_limits(engine, voice, fake_stream):
    texts = {
        "en": "First, a short one. " + ", ".join(["and then the avatar keeps on talking"] * 9) + ".",
        "es": "Hola. " + ", ".join(["y luego el avatar sigue hablando sin parar"] * 8) + ".",
        "zh": "你好。" + "，".join(["我们今天一起去公园散步然后吃午饭"] * 8) + "。",
    }
    for language, text in texts.items():
        fake_stream.clear()
        list(engine.stream(text, language, voice))
        calls = [t for t, _, _ in fake_stream]
        assert len(calls) >= 3 and max(len(t) for t in calls) <= CHAR_LIMITS[language]
        assert len(calls[1]) > CHAR_LIMITS[language] // 2  # filled up to the limit, not cut at every comma
        assert "".join(calls).replace(" ", "") == text.replace(" ", "")  # nothing lost
    # A sentence within the limit goes in one call (the bundled engine would cut it at commas).
    sentence = "Well, I build avatars, I write code, and I answer questions about both, in three languages."
    fake_stream.clear()
    list(engine.stream(sentence, "en", voice))
    assert [t for t, _, _ in fake_stream] == [sentence]
    assert XTTSEngine(engine.checkpoint_dir, clause_chars={"en": 1000}).planner.clause_chars["en"] == 250


def test_voice_is_required_without_preset_speakers(engine, voice, fake_stream):
    with pytest.raises(InputError, match="reference voice") as err:
        engine.stream("Hello there.", "en", None)
    assert err.value.code == "voice_required"
    release_sized = {
        "gpt_cond_latent": np.zeros((1, 32, 1024), np.float32),
        "speaker_embedding": np.zeros((1, 512, 1), np.float32),
    }
    foreign = Voice(voice.voice_id, engine.name, 3.0, release_sized)
    with pytest.raises(InputError, match="prepare the voice again") as err:
        engine.stream("Hello there.", "en", foreign)
    assert err.value.code == "voice_mismatch"
    # A voice that went through JSON (arrays as lists) still speaks, with the same latents.
    assert list(engine.stream("Hi.", "en", Voice.from_dict(voice.to_dict())))
    assert np.array_equal(fake_stream[0][2].numpy(), voice.conditioning["gpt_cond_latent"])


def test_preset_speaker_is_used_when_no_voice_is_given(checkpoint, tmp_path, fake_stream):
    for name in REQUIRED_FILES:
        (tmp_path / name).symlink_to(checkpoint / name)
    preset = {"gpt_cond_latent": torch.randn(1, 32, LATENT_DIM), "speaker_embedding": torch.randn(1, 512, 1)}
    torch.save({"Ana": preset}, tmp_path / "speakers_xtts.pth")
    chunks = list(XTTSEngine(tmp_path, speaker="Ana", cache_dir=tmp_path).stream("Hola.", "es", None))
    assert chunks and torch.equal(fake_stream[0][2], preset["gpt_cond_latent"])


def test_torchaudio_stand_in_matches_the_reference_formulas():
    # Slaney mel filters as librosa computes them (torchaudio documents the same numbers).
    ours = melscale_fbanks(1025, 0.0, 8000.0, 80, 22050, norm="slaney", mel_scale="slaney").numpy()
    theirs = librosa.filters.mel(sr=22050, n_fft=2048, n_mels=80, fmin=0, fmax=8000, htk=False, norm="slaney")
    np.testing.assert_allclose(ours, theirs.T, atol=1e-6)
    # Band-limited resampling keeps a tone: 440 Hz at 44.1 kHz -> 22.05 kHz and 16 kHz.
    t = np.arange(44_100) / 44_100
    tone = torch.from_numpy(np.sin(2 * np.pi * 440 * t).astype(np.float32))[None]
    for rate in (22_050, 16_000):
        out = resample(tone, 44_100, rate)[0].numpy()
        assert out.size == rate
        expected = np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
        np.testing.assert_allclose(out[200:-200], expected[200:-200], atol=2e-3)
    # Buffer names match torchaudio's: they are keys of XTTS's state dict (speaker encoder front end).
    assert set(MelSpectrogram(n_mels=64).state_dict()) == {"spectrogram.window", "mel_scale.fb"}
