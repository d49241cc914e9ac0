import ctypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from graphs.launch import free_port, resolve, running, wait_ready

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


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    """A 127.0.0.1 port nothing listens on (at the time of asking)."""
    return free_port()


def _die_with_parent() -> None:
    # Linux prctl(PR_SET_PDEATHSIG, SIGTERM): the emulator ends even if pytest is killed before teardown.
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """A real gcp-storage-emulator on 127.0.0.1 (in memory, one per session); yields its URL.

    STORAGE_EMULATOR_HOST points at it from first use to the end of the session, so any
    ``storage.Client()`` talks to it, never to real GCS. Tests share it: each module makes its own bucket.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port),
         "--in-memory", "-q"],
        preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the storage emulator did not start") from None
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("STORAGE_EMULATOR_HOST", url)
            yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def serve_cache(tmp_path_factory) -> Path:
    """The module's server's cache dir (prepared assets, cached clips)."""
    return tmp_path_factory.mktemp("serve-cache")


@pytest.fixture(scope="module")
def api_server(request, serve_cache) -> Iterator[str]:
    """The real Serve graph (cpu profile of serve_config.yaml) on a free loopback port, per test module
    (so its idle replicas don't take CPU from the modules that don't use it). A module's ``SERVER_ENV``
    dict adds AVATAR_* overrides for its server (e.g. smaller session caps)."""
    import httpx

    config = resolve("cpu")
    config["http_options"]["port"] = free_port()
    config["applications"][0]["args"]["log_level"] = "WARNING"
    with pytest.MonkeyPatch.context() as patch:
        # Settings are resolved here, in the driver, and handed to every replica.
        patch.setenv("AVATAR_CACHE_DIR", str(serve_cache))
        for name, value in getattr(request.module, "SERVER_ENV", {}).items():
            patch.setenv(name, value)
        with running(config) as base:
            wait_ready(base)
            # First calls pay one-off costs (phonemizer dictionaries, ONNX sessions): not the tests' to time.
            httpx.post(f"{base}/v1/render", json={"text": "Warming up.", "language": "en"}, timeout=120)
            yield base
