import pytest

from engines import registry
from realtime_avatar.config import Settings, load_profile


def test_profiles_merge_over_defaults():
    cpu, l4 = load_profile("cpu"), load_profile("l4")
    assert cpu["asr"]["options"]["device"] == "cpu"
    assert l4["asr"]["options"]["device"] == "cuda"
    assert l4["render"] == cpu["render"]  # untouched keys come from the defaults
    with pytest.raises(ValueError, match="unknown profile"):
        load_profile("tpu")


def test_environment_overrides_nested_values(monkeypatch):
    monkeypatch.setenv("AVATAR_RENDER__SIZE", "360")
    monkeypatch.setenv("AVATAR_TTS__OPTIONS__THREADS", "1")
    settings = Settings()
    assert settings.render.size == 360
    assert settings.tts.options["threads"] == 1
    assert settings.tts.name == "bundled"  # sibling keys survive the override


def test_invalid_size_is_rejected(monkeypatch):
    monkeypatch.setenv("AVATAR_RENDER__SIZE", "512")
    with pytest.raises(ValueError, match="size must be one of"):
        Settings()


def test_registry_resolves_aliases_and_dotted_paths():
    assert registry.resolve("tts", "engines.media.mp4:Mp4Writer").__name__ == "Mp4Writer"
    with pytest.raises(ValueError, match="unknown tts engine"):
        registry.resolve("tts", "no-such-engine")
