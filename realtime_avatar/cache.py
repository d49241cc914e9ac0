"""Prepared state (portraits, voices) cached by content hash: a small in-memory LRU over a disk dir."""

from __future__ import annotations

import hashlib
import threading
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
    """Bytes by key, kept in memory (LRU) and on disk; disk writes are atomic."""

    def __init__(self, directory: Path, *, memory_items: int = 32) -> None:
        self.directory = directory
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_items = memory_items
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored; every put lands on disk first, so the file is the truth."""
        return self._path(key).is_file()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        path = self._path(key)
        if not path.exists():
            return None
        data = path.read_bytes()
        self._remember(key, data)
        return data

    def put(self, key: str, data: bytes) -> None:
        with atomic_output(self._path(key)) as tmp:
            tmp.write_bytes(data)
        self._remember(key, data)

    def _remember(self, key: str, data: bytes) -> None:
        with self._lock:
            self._memory[key] = data
            self._memory.move_to_end(key)
            while len(self._memory) > self._memory_items:
                self._memory.popitem(last=False)
