"""Model weights tool: GCS sync against a real local emulator, verification, the hub's failure message and
the profile weight check. No test reaches a network beyond 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.cloud import storage

from realtime_avatar import models
from realtime_avatar.cli import EXIT_UNAVAILABLE, main
from realtime_avatar.config import Settings
from realtime_avatar.models import MANIFEST_NAME, FetchError, ModelEntry, ModelFile, fetch, verify

BUCKET = "weights-cache"
PREFIX = "mirror/models"
ROOT = Path(__file__).resolve().parents[1]

# A made-up model: one file with a published size and sha256, the others with neither (like most real ones).
BLOB_A = bytes(range(256)) * 2000  # 512,000 bytes
BLOB_B = bytes((i * 7) % 251 for i in range(300_001))
CONFIG = b'{"toy": true}\n'
TOY = ModelEntry(
    name="toy",
    repo_id="example/toy",
    subdir="toy",
    files=(
        ModelFile("weights/a.bin", size=len(BLOB_A), sha256=hashlib.sha256(BLOB_A).hexdigest()),
        ModelFile("weights/b.bin"),
        ModelFile("config.json"),
    ),
    license="none",
)
CONTENT = {"weights/a.bin": BLOB_A, "weights/b.bin": BLOB_B, "config.json": CONFIG}


@pytest.fixture(scope="module")
def bucket(gcs_emulator) -> str:
    """A bucket on the shared storage emulator holding the toy model (plus a file it must not fetch)."""
    created = storage.Client().create_bucket(BUCKET)
    for rel, data in {**CONTENT, "insightface/det.onnx": b"not ours"}.items():
        created.blob(f"{PREFIX}/toy/{rel}").upload_from_string(data)
    created.blob("partial/toy/config.json").upload_from_string(CONFIG)
    return f"gs://{BUCKET}/{PREFIX}"


@pytest.fixture
def toy_registry(monkeypatch) -> None:
    monkeypatch.setitem(models.REGISTRY, "toy", TOY)


def _layout(root: Path) -> Path:
    for rel, data in CONTENT.items():
        (root / "toy" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "toy" / rel).write_bytes(data)
    return root / "toy"


# --- GCS -------------------------------------------------------------------------------------------


def test_gcs_fetch_downloads_the_layout_and_verifies(bucket, tmp_path):
    result = fetch(TOY, tmp_path, source=bucket, progress=False)
    assert result.report.complete, models.format_report(result.report)
    assert result.transferred == sum(len(d) for d in CONTENT.values())
    for rel, data in CONTENT.items():
        assert (tmp_path / "toy" / rel).read_bytes() == data
    assert not (tmp_path / "toy" / "insightface").exists()  # only the entry's files are fetched
    assert not list((tmp_path / "toy").rglob("*.part"))
    assert (tmp_path / "toy" / MANIFEST_NAME).is_file()
    assert verify(TOY, tmp_path / "toy").complete
    # A second fetch finds every file matching the bucket's checksums: nothing is transferred.
    assert fetch(TOY, tmp_path, source=bucket, progress=False).transferred == 0


def test_cli_fetch_from_gcs_then_verify(bucket, tmp_path, toy_registry, capsys):
    assert main(["models", "fetch", "toy", "--to", str(tmp_path), "--from", bucket, "--quiet"]) == 0
    assert main(["models", "verify", "toy", "--to", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and "INCOMPLETE" not in out
    assert "sha256 matches (published)" in out  # a.bin: the registry's hash
    assert "sha256 matches (recorded at fetch)" in out  # b.bin, config.json: hashes recorded by the fetch


def test_truncated_or_corrupt_file_fails_verify(bucket, tmp_path, toy_registry, capsys):
    directory = fetch(TOY, tmp_path, source=bucket, progress=False).report.directory
    b_file = directory / "weights/b.bin"
    b_file.write_bytes(BLOB_B[:1000])  # truncated: caught by the size recorded at fetch
    report = verify(TOY, directory)
    assert [(f.path, f.status) for f in report.problems] == [("weights/b.bin", "size mismatch")]

    b_file.write_bytes(BLOB_B)
    a_file = directory / "weights/a.bin"
    a_file.write_bytes(BLOB_A[:-1] + b"\x00")  # same size, one byte changed: caught by the published hash
    report = verify(TOY, directory)
    assert [(f.path, f.status) for f in report.problems] == [("weights/a.bin", "hash mismatch")]
    assert main(["models", "verify", "toy", "--to", str(tmp_path)]) == 1
    assert "HASH MISMATCH" in capsys.readouterr().out
    # Fetching again repairs exactly the corrupt file.
    result = fetch(TOY, tmp_path, source=bucket, progress=False)
    assert result.report.complete and result.transferred == len(BLOB_A)


def test_interrupted_download_resumes_from_the_part_file(bucket, tmp_path):
    directory = tmp_path / "toy"
    (directory / "weights").mkdir(parents=True)
    half = len(BLOB_A) // 2
    (directory / "weights/a.bin.part").write_bytes(BLOB_A[:half])  # left by an interrupted fetch
    result = fetch(TOY, tmp_path, source=bucket, progress=False)
    assert result.report.complete
    assert result.transferred == len(BLOB_A) - half + len(BLOB_B) + len(CONFIG)
    assert (directory / "weights/a.bin").read_bytes() == BLOB_A
    assert not (directory / "weights/a.bin.part").exists()


def test_part_file_with_wrong_bytes_is_fetched_again(bucket, tmp_path):
    directory = tmp_path / "toy"
    (directory / "weights").mkdir(parents=True)
    (directory / "weights/a.bin.part").write_bytes(b"\xff" * 1000)  # not the blob's bytes
    result = fetch(TOY, tmp_path, source=bucket, progress=False)
    assert result.report.complete
    assert (directory / "weights/a.bin").read_bytes() == BLOB_A


def test_bucket_without_the_files_names_them(bucket, tmp_path):
    with pytest.raises(FetchError, match=r"lacks weights/a\.bin, weights/b\.bin") as err:
        fetch(TOY, tmp_path, source=f"gs://{BUCKET}/partial", progress=False)
    assert "--from gs://BUCKET/PREFIX" in str(err.value)


# --- verify on local layouts -----------------------------------------------------------------------


def test_verify_complete_and_missing_layout(tmp_path, toy_registry, capsys):
    directory = _layout(tmp_path)
    report = verify(TOY, directory)
    assert report.complete
    assert "no published or recorded sha256" in models.format_report(report)  # copied in: nothing recorded
    assert main(["models", "verify", "toy", "--to", str(tmp_path)]) == 0

    (directory / "config.json").unlink()
    report = verify(TOY, directory)
    assert [(f.path, f.status) for f in report.problems] == [("config.json", "missing")]
    capsys.readouterr()
    assert main(["models", "verify", "toy", "--to", str(tmp_path)]) == 1
    assert "INCOMPLETE: 1 of 3 files" in capsys.readouterr().out


def test_verify_flags_a_file_far_from_its_published_size(tmp_path):
    entry = ModelEntry("approx", "example/approx", "approx", (ModelFile("m.pth", approx_bytes=2e6),), "none")
    (tmp_path / "m.pth").write_bytes(b"\x01" * 1_950_000)
    assert verify(entry, tmp_path).complete
    (tmp_path / "m.pth").write_bytes(b"\x01" * 1_000_000)
    assert verify(entry, tmp_path).problems[0].status == "size mismatch"


# --- the model hub, unreachable --------------------------------------------------------------------


@pytest.mark.parametrize("offline", [False, True])
def test_unreachable_hub_gives_a_clear_message(tmp_path, offline, free_port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{free_port}", HF_HOME=str(tmp_path / "hf"))
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "realtime_avatar.cli", "models", "fetch", "liveportrait", "--to",
         str(tmp_path / "models"), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot fetch liveportrait from the model hub (KwaiVGI/LivePortrait)" in proc.stderr
    assert "--from gs://BUCKET/PREFIX" in proc.stderr and "then copy DIR/liveportrait" in proc.stderr


# --- profile weight check --------------------------------------------------------------------------


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """The l4 profile's "{models_dir}" weight paths resolve under this empty cache dir."""
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_l4_profile_lists_missing_weights_with_fetch_commands(empty_cache):
    missing = models.check_profile_weights(Settings(profile="l4"))
    assert len(missing) == 4
    for name, kind in (("whisper-small", "asr"), ("qwen2.5-7b-instruct-awq", "llm"), ("xtts-v2", "tts"),
                       ("liveportrait", "avatar")):
        (line,) = [m for m in missing if m.startswith(f"{kind} engine")]
        models_dir = empty_cache / "models"
        assert f"{name} weights missing" in line and str(models_dir / name) in line
        assert f"Fetch: avatar models fetch {name}" in line


def test_l4_check_passes_an_engine_once_its_files_are_there(empty_cache):
    whisper = empty_cache / "models/whisper-small"
    whisper.mkdir(parents=True)
    for f in models.REGISTRY["whisper-small"].files:
        (whisper / f.path).write_bytes(b"x")
    missing = models.check_profile_weights(Settings(profile="l4"))
    assert [m.split(" ", 1)[0] for m in missing] == ["llm", "tts", "avatar"]


def test_cpu_profile_needs_no_fetched_weights(empty_cache):
    assert models.check_profile_weights(Settings(profile="cpu")) == []


def test_check_command_and_render_startup(empty_cache, tmp_path, monkeypatch, capsys):
    assert main(["models", "check", "--profile", "l4"]) == 1
    assert "avatar models fetch liveportrait" in capsys.readouterr().out
    assert main(["models", "check", "--profile", "cpu"]) == 0
    # Rendering with the l4 profile stops before loading any model, naming what to fetch.
    monkeypatch.setenv("AVATAR_PROFILE", "l4")
    out = tmp_path / "clip.mp4"
    assert main(["render", "--text", "Hello.", "-o", str(out)]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert "avatar models fetch xtts-v2" in err and not out.exists()
