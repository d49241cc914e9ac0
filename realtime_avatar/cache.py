"""Prepared state (portraits, voices) cached by content hash: a small in-memory LRU over a disk dir."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from pathlib import Path

from engines.media.files import atomic_output


def content_hash(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


class BlobCache:
    """Bytes by key, kept in memory (LRU) and on disk; disk writes are atomic.

    ``private``: files are written 0600 in 0700 directories (uploaded faces and voices). ``max_age_s``:
    an entry older than this (by its file's time) reads as absent, and ``purge`` deletes it. The file is
    the truth: a memory hit whose file is gone (deleted by another process) is dropped.
    """

    def __init__(self, directory: Path, *, memory_items: int = 32, private: bool = False,
                 max_age_s: float | None = None) -> None:
        self.directory = directory
        self.private = private
        self.max_age_s = max_age_s
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_items = memory_items
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def _fresh(self, path: Path) -> bool:
        try:
            stored = path.stat().st_mtime
        except OSError:
            return False
        return self.max_age_s is None or time.time() - stored <= self.max_age_s

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored (and not expired); every put lands on disk first, so the file is
        the truth."""
        return self._fresh(self._path(key))

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        if not self._fresh(path):
            self._forget(key)
            return None
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        try:
            data = path.read_bytes()
        except OSError:
            return None
        self._remember(key, data)
        return data

    def put(self, key: str, data: bytes) -> None:
        if self.private:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_output(self._path(key), mode=0o600 if self.private else None) as tmp:
            tmp.write_bytes(data)
        self._remember(key, data)

    def delete(self, key: str) -> bool:
        """Remove ``key`` from disk and memory; False if it was not stored."""
        self._forget(key)
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def purge(self) -> int:
        """Delete every entry older than ``max_age_s``; how many went."""
        if self.max_age_s is None or not self.directory.is_dir():
            return 0
        gone = 0
        for path in self.directory.glob("*/*"):
            if path.is_file() and not path.name.startswith(".") and not self._fresh(path):
                gone += self.delete(path.name)
        return gone

    def _forget(self, key: str) -> None:
        with self._lock:
            self._memory.pop(key, None)

    def _remember(self, key: str, data: bytes) -> None:
        with self._lock:
            self._memory[key] = data
            self._memory.move_to_end(key)
            while len(self._memory) > self._memory_items:
                self._memory.popitem(last=False)
