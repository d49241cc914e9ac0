"""Prepared state by id: voices (``POST /v1/voices``) and avatars (``POST /v1/avatars``), stored as bytes.

``LocalAssetStore`` keeps them in an in-memory LRU over a disk directory (one ``BlobCache`` per kind).
``GcsAssetStore`` puts a bucket behind that, so every node of a cluster sees what any node stored:
reads try the local store first, then the bucket (filling the local store on a hit); writes go to the
bucket, then the local store. ``build_store`` picks one from the settings.

Kinds and ids are checked before anything touches a path or an object name: ids arrive in URLs and
JSON, so only lower-case hex (what ``content_hash`` makes) is accepted and nothing can climb out of
the store's directory or prefix.

Voices and avatars (a person's voice features, a face crop and its landmarks) are private: their local
files are 0600 in 0700 directories, ``delete`` removes them everywhere, and with ``retention_s`` they
read as absent once that old and ``purge`` deletes them (locally by file time, in the bucket by the
object's creation time).
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from engines.errors import InputError
from realtime_avatar.cache import BlobCache

if TYPE_CHECKING:
    from realtime_avatar.config import StoreSettings

# clips: cached generated reply clips (realtime_avatar.clips); motions: an avatar's motion statistics
# from its owner's video, under the avatar's id
KINDS = ("voices", "avatars", "clips", "motions")
PRIVATE_KINDS = ("voices", "avatars", "motions")  # of a person: 0600, retention, DELETE
_ASSET_ID = re.compile(r"[0-9a-f]{16,64}")

GCS_TIMEOUT_S = 30.0  # per request
GCS_RETRY_DEADLINE_S = 15.0  # retries of one call stop after this: an unreachable bucket fails in ~15 s


class InvalidAssetIdError(InputError):
    """An asset id that is not 16-64 lower-case hex digits (a ``ValueError``; answer 400)."""

    code = "invalid_asset_id"


class StoreUnavailableError(RuntimeError):
    """The shared store (GCS) could not be reached or refused the request; the message says why."""

    code = "store_unavailable"
    status = 503


def check_key(kind: str, asset_id: str) -> None:
    """Raise ``ValueError`` unless ``kind`` is a known kind and ``asset_id`` is 16-64 lower-case hex."""
    if kind not in KINDS:
        raise ValueError(f"unknown asset kind {kind!r}; known: {', '.join(KINDS)}")
    # fullmatch, not match with "$": "$" would also accept a trailing newline.
    if not isinstance(asset_id, str) or not _ASSET_ID.fullmatch(asset_id):
        raise InvalidAssetIdError(
            f"invalid {kind[:-1]} id {asset_id!r}: expected 16-64 lower-case hex digits"
        )


@runtime_checkable
class AssetStore(Protocol):
    """Bytes by (kind, id). Every method raises ``ValueError`` for an unknown kind or a malformed id."""

    def get(self, kind: str, asset_id: str) -> bytes | None: ...

    def put(self, kind: str, asset_id: str, data: bytes) -> None: ...

    def exists(self, kind: str, asset_id: str) -> bool: ...

    def delete(self, kind: str, asset_id: str) -> bool: ...

    def purge(self, kind: str) -> int: ...


class LocalAssetStore:
    """One ``BlobCache`` per kind under ``root/kind``: an in-memory LRU of ``memory_items`` per kind,
    over atomic files that outlive the process. ``retention_s`` applies to ``PRIVATE_KINDS``."""

    def __init__(self, root: Path, memory_items: int = 32, retention_s: float | None = None) -> None:
        self.root = Path(root).expanduser()
        self._caches = {
            kind: BlobCache(self.root / kind, memory_items=memory_items, private=kind in PRIVATE_KINDS,
                            max_age_s=retention_s if kind in PRIVATE_KINDS else None)
            for kind in KINDS
        }

    def get(self, kind: str, asset_id: str) -> bytes | None:
        check_key(kind, asset_id)
        return self._caches[kind].get(asset_id)

    def put(self, kind: str, asset_id: str, data: bytes) -> None:
        check_key(kind, asset_id)
        self._caches[kind].put(asset_id, bytes(data))

    def exists(self, kind: str, asset_id: str) -> bool:
        check_key(kind, asset_id)
        # Not a get: reading the bytes just to answer "is it there" would reshuffle the LRU.
        return self._caches[kind].exists(asset_id)

    def delete(self, kind: str, asset_id: str) -> bool:
        check_key(kind, asset_id)
        return self._caches[kind].delete(asset_id)

    def purge(self, kind: str) -> int:
        """Delete the entries of ``kind`` past their retention; how many went."""
        check_key(kind, "0" * 16)
        return self._caches[kind].purge()


class GcsAssetStore:
    """Objects at ``{prefix}/{kind}/{asset_id}`` in ``bucket``, in front of an optional local store.

    ``client`` defaults to ``google.cloud.storage.Client()``, made on first use (it honours
    ``STORAGE_EMULATOR_HOST`` and application default credentials). With ``local=None`` every read
    goes to the bucket. A missing object reads as ``None``; any other failure of the bucket (network,
    credentials, permissions, a missing bucket on write) raises ``StoreUnavailableError``.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        local: LocalAssetStore | None = None,
        client: Any = None,
        *,
        timeout_s: float = GCS_TIMEOUT_S,
        retry_deadline_s: float = GCS_RETRY_DEADLINE_S,
        retention_s: float | None = None,
        recheck_s: float = 30.0,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid bucket name {bucket!r}: give the bare name, without gs:// or a path")
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.local = local
        self.timeout_s = timeout_s
        self.retry_deadline_s = retry_deadline_s
        self.retention_s, self.recheck_s = retention_s, recheck_s
        self._checked: dict[tuple[str, str], float] = {}  # when the bucket last confirmed a local copy
        self._client = client
        self._bucket: Any = None
        self._lock = threading.Lock()

    def object_name(self, kind: str, asset_id: str) -> str:
        check_key(kind, asset_id)
        return f"{self.prefix}/{kind}/{asset_id}" if self.prefix else f"{kind}/{asset_id}"

    def get(self, kind: str, asset_id: str) -> bytes | None:
        name = self.object_name(kind, asset_id)
        if self.local is not None and (data := self.local.get(kind, asset_id)) is not None:
            if self._still_there(kind, asset_id):
                return data
            return None
        gcs = _gcs()
        try:
            blob = self._blob(name)
            data = blob.download_as_bytes(timeout=self.timeout_s, retry=self._retry())
        except gcs.not_found:
            return None
        except gcs.errors as exc:
            raise self._unavailable("read", name, exc) from exc
        if self._expired(kind, blob):
            self.delete(kind, asset_id)
            return None
        if self.local is not None:
            self.local.put(kind, asset_id, data)
            self._checked[(kind, asset_id)] = time.monotonic()
        return data

    def _still_there(self, kind: str, asset_id: str) -> bool:
        """A local copy of a private kind counts while the bucket has the object (asked at most every
        ``recheck_s``): a DELETE or an expiry seen by another node reaches this one."""
        last = self._checked.get((kind, asset_id))
        if kind not in PRIVATE_KINDS or (last is not None and time.monotonic() - last <= self.recheck_s):
            return True
        name = self.object_name(kind, asset_id)
        gcs = _gcs()
        try:
            blob = self._blob(name)
            blob.reload(timeout=self.timeout_s, retry=self._retry())
        except gcs.not_found:
            blob = None
        except gcs.errors as exc:
            raise self._unavailable("check", name, exc) from exc
        if blob is None or self._expired(kind, blob):
            self.delete(kind, asset_id)
            return False
        self._checked[(kind, asset_id)] = time.monotonic()
        return True

    def _expired(self, kind: str, blob: Any) -> bool:
        created = getattr(blob, "time_created", None)
        if kind not in PRIVATE_KINDS or self.retention_s is None or created is None:
            return False
        return (datetime.now(UTC) - created).total_seconds() > self.retention_s

    def delete(self, kind: str, asset_id: str) -> bool:
        """Remove the object and the local copy; False if neither was there."""
        name = self.object_name(kind, asset_id)
        self._checked.pop((kind, asset_id), None)
        local = self.local.delete(kind, asset_id) if self.local is not None else False
        gcs = _gcs()
        try:
            self._blob(name).delete(timeout=self.timeout_s, retry=self._retry())
        except gcs.not_found:
            return local
        except gcs.errors as exc:
            raise self._unavailable("delete", name, exc) from exc
        return True

    def purge(self, kind: str) -> int:
        """Delete the objects of ``kind`` past their retention (and expired local copies); how many."""
        gone = self.local.purge(kind) if self.local is not None else 0
        if kind not in PRIVATE_KINDS or self.retention_s is None:
            return gone
        prefix = self.object_name(kind, "0" * 16)[: -16]
        gcs = _gcs()
        try:
            self._blob(prefix)  # makes the client and bucket
            for blob in self._bucket.list_blobs(prefix=prefix, timeout=self.timeout_s, retry=self._retry()):
                if self._expired(kind, blob):
                    blob.delete(timeout=self.timeout_s, retry=self._retry())
                    gone += 1
        except gcs.errors as exc:
            raise self._unavailable("purge", prefix, exc) from exc
        return gone

    def put(self, kind: str, asset_id: str, data: bytes) -> None:
        name = self.object_name(kind, asset_id)
        data = bytes(data)
        gcs = _gcs()
        # The bucket first: an id handed out must be readable from every node, so a failed upload
        # leaves nothing behind locally either. Ids are content hashes, so a re-upload is harmless.
        try:
            self._blob(name).upload_from_string(
                data, content_type="application/octet-stream", timeout=self.timeout_s, retry=self._retry()
            )
        except gcs.errors as exc:  # NotFound here means the bucket itself is missing
            raise self._unavailable("write", name, exc) from exc
        if self.local is not None:
            self.local.put(kind, asset_id, data)

    def exists(self, kind: str, asset_id: str) -> bool:
        name = self.object_name(kind, asset_id)
        if self.local is not None and self.local.exists(kind, asset_id):
            return self._still_there(kind, asset_id)
        gcs = _gcs()
        try:
            blob = self._blob(name)
            blob.reload(timeout=self.timeout_s, retry=self._retry())
        except gcs.not_found:
            return False
        except gcs.errors as exc:
            raise self._unavailable("check", name, exc) from exc
        return not self._expired(kind, blob)

    def _blob(self, name: str) -> Any:
        with self._lock:
            if self._bucket is None:
                gcs = _gcs()
                try:
                    client = self._client if self._client is not None else gcs.storage.Client()
                except gcs.errors as exc:
                    raise StoreUnavailableError(
                        f"cannot create a GCS client for gs://{self.bucket_name}: {exc}"
                    ) from exc
                self._client = client
                self._bucket = client.bucket(self.bucket_name)
            return self._bucket.blob(name)

    def _retry(self) -> Any:
        return _gcs().default_retry.with_timeout(self.retry_deadline_s)

    def _unavailable(self, action: str, name: str, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"cannot {action} gs://{self.bucket_name}/{name}: {type(exc).__name__}: {exc}"
        )


class _Gcs:
    """google-cloud-storage and the exceptions it raises, imported on first use."""

    def __init__(self) -> None:
        try:
            from google.api_core.exceptions import GoogleAPIError, NotFound
            from google.auth.exceptions import GoogleAuthError
            from google.cloud import storage
            from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
            from google.cloud.storage.retry import DEFAULT_RETRY
            from requests.exceptions import RequestException
        except ImportError as exc:
            raise StoreUnavailableError(
                f"a GCS asset store needs google-cloud-storage (pip install google-cloud-storage): {exc}"
            ) from exc
        self.storage = storage
        self.default_retry = DEFAULT_RETRY
        self.not_found: type[BaseException] = NotFound
        self.errors: tuple[type[BaseException], ...] = (
            GoogleAPIError, GoogleAuthError, RequestException, InvalidResponse, DataCorruption,
        )


_GCS: _Gcs | None = None


def _gcs() -> _Gcs:
    global _GCS
    if _GCS is None:
        _GCS = _Gcs()
    return _GCS


def build_store(settings_store: StoreSettings, cache_path: Path) -> AssetStore:
    """GCS (with ``cache_path/assets`` as its local layer) when a bucket is set, else the local store."""
    local = LocalAssetStore(Path(cache_path) / "assets", memory_items=settings_store.memory_items,
                            retention_s=settings_store.retention_s)
    if settings_store.bucket:
        return GcsAssetStore(settings_store.bucket, settings_store.prefix, local=local,
                             retention_s=settings_store.retention_s, recheck_s=settings_store.recheck_s)
    return local
