"""Cached generated clips: a finished clip stored under the content hash of everything that made it.

The key covers the text, language, voice, avatar and every engine and render setting, so a change to
any of them makes a new key instead of serving a stale clip. The clips live in the asset store (GCS
when a bucket is set: its lifecycle rule expires them there); on this node's disk the cache keeps to
``max_bytes`` (oldest first) and treats clips older than ``ttl_s`` as absent.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from realtime_avatar.cache import content_hash
from realtime_avatar.config import ClipCacheSettings, Settings
from realtime_avatar.logs import event
from realtime_avatar.store import AssetStore

log = logging.getLogger("realtime_avatar.clips")
KIND = "clips"


def clip_key(settings: Settings, *, text: str, language: str, voice_id: str | None,
             avatar_id: str | None) -> str:
    """The content id of a clip: what it says, who says it, and how it was made."""
    recipe = {
        "text": text, "language": language, "voice_id": voice_id, "avatar_id": avatar_id,
        "tts": settings.tts.model_dump(mode="json"), "motion": settings.motion.model_dump(mode="json"),
        "avatar": settings.avatar.model_dump(mode="json"), "render": settings.render.model_dump(mode="json"),
        "limits": settings.limits.max_text_chars,
    }
    return content_hash("clip", json.dumps(recipe, sort_keys=True))[:32]


class ClipCache:
    def __init__(self, settings: ClipCacheSettings, store: AssetStore, local_dir: Path) -> None:
        self.settings, self.store, self.local_dir = settings, store, local_dir

    def get(self, key: str) -> bytes | None:
        if not self.settings.enabled:
            return None
        path = self._local_path(key)
        if path.is_file() and time.time() - path.stat().st_mtime > self.settings.ttl_s:
            path.unlink(missing_ok=True)
            return None
        return self.store.get(KIND, key)

    def put(self, key: str, data: bytes) -> None:
        if not self.settings.enabled or len(data) > self.settings.max_bytes:
            return
        self.store.put(KIND, key, data)
        self._evict()

    def _local_path(self, key: str) -> Path:
        return self.local_dir / key[:2] / key  # the local store's layout (realtime_avatar.cache.BlobCache)

    def _evict(self) -> None:
        files = sorted((p for p in self.local_dir.glob("*/*") if p.is_file()),
                       key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if total <= self.settings.max_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
            event(log, "clip_evicted", key=path.name)
