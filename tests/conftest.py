from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Prepared portraits/voices go to a per-session temp cache; model files keep the user cache."""
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "avatar-cache"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA
