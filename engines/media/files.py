"""File helpers: write-then-rename (a reader never sees a half-written file) and content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; finished outputs get the permissions a plain open() would give them.
_FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_output(destination: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place only on success.

    ``mode``: the finished file's permissions (e.g. 0o600 for private data; its new directories get
    0o700); default: what a plain ``open()`` would give it."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True, **({} if mode is None else {"mode": 0o700}))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE if mode is None else mode)
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()
