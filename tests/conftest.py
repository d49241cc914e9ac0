from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Prepared portraits/voices go to a per-session temp cache; model files keep the user cache."""
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "avatar-cache"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def lj_speech() -> tuple[np.ndarray, int]:
    """LJ001-0001: 9.7 s of a female English speaker (public domain), float32 mono."""
    pcm, sample_rate = sf.read(DATA / "LJ001-0001.wav", dtype="float32")
    return pcm, sample_rate


@pytest.fixture(scope="session")
def asr():
    """The bundled whisper base model, loaded once for every test that listens to audio."""
    from engines.asr.whisper import WhisperASR

    engine = WhisperASR()
    engine.load()
    return engine
