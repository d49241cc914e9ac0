"""Asset store: local LRU + disk, id/kind validation, settings, and GCS against a real local emulator."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest
from google.cloud import storage

from realtime_avatar.cache import content_hash
from realtime_avatar.config import Settings, StoreSettings
from realtime_avatar.store import (
    KINDS,
    AssetStore,
    GcsAssetStore,
    LocalAssetStore,
    StoreUnavailableError,
    build_store,
)

BUCKET = "asset-store-test"
VOICE = content_hash("voice one")
AVATAR = content_hash("portrait one")
_prefixes = itertools.count()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- local -----------------------------------------------------------------------------------------


def test_local_round_trip_keeps_kinds_apart(tmp_path):
    store = LocalAssetStore(tmp_path / "assets")
    assert isinstance(store, AssetStore)
    assert store.get("voices", VOICE) is None and not store.exists("voices", VOICE)
    store.put("voices", VOICE, b"latents")
    store.put("avatars", AVATAR, b"portrait")
    assert store.get("voices", VOICE) == b"latents" and store.exists("voices", VOICE)
    assert store.get("avatars", AVATAR) == b"portrait"
    assert store.get("avatars", VOICE) is None and not store.exists("avatars", VOICE)  # kinds are separate
    assert all(path.is_relative_to(tmp_path / "assets") for path in _files(tmp_path))
    assert not [p for p in _files(tmp_path) if p.name.endswith(".part")]  # atomic writes left no temp files


def test_local_store_persists_across_instances(tmp_path):
    LocalAssetStore(tmp_path).put("voices", VOICE, b"latents")
    again = LocalAssetStore(tmp_path)  # a fresh process: empty memory, same directory
    assert again.exists("voices", VOICE)
    assert again.get("voices", VOICE) == b"latents"


def test_local_memory_is_a_bounded_lru(tmp_path):
    store = LocalAssetStore(tmp_path, memory_items=2)
    a, b, c = (content_hash(name) for name in "abc")
    store.put("voices", a, b"A")
    store.put("voices", b, b"B")
    assert store.get("voices", a) == b"A"  # a is now the most recently used
    store.put("voices", c, b"C")  # evicts b, the least recently used
    for path in _files(tmp_path):
        path.write_bytes(b"disk")  # from here on what memory holds reads as before, the rest from disk
    assert store.get("voices", a) == b"A"
    assert store.get("voices", c) == b"C"
    assert store.get("voices", b) == b"disk"


def test_deleted_file_is_gone_from_memory_too(tmp_path):
    """Another process's DELETE removes the file: a copy in this process's memory must not outlive it."""
    store, other = LocalAssetStore(tmp_path), LocalAssetStore(tmp_path)
    store.put("avatars", VOICE, b"face")
    assert store.get("avatars", VOICE) == b"face"
    assert other.delete("avatars", VOICE)
    assert store.get("avatars", VOICE) is None and not store.exists("avatars", VOICE)
    assert not other.delete("avatars", VOICE)


def test_private_kinds_are_0600_and_expire(tmp_path):
    store = LocalAssetStore(tmp_path, retention_s=60)
    for kind in ("voices", "avatars"):
        store.put(kind, VOICE, b"person")
        path = tmp_path / kind / VOICE[:2] / VOICE
        assert path.stat().st_mode & 0o777 == 0o600, oct(path.stat().st_mode)
        for folder in (path.parent, tmp_path / kind):
            assert folder.stat().st_mode & 0o077 == 0, oct(folder.stat().st_mode)
        old = time.time() - 61
        os.utime(path, (old, old))
        assert store.get(kind, VOICE) is None and not store.exists(kind, VOICE)
        assert store.purge(kind) == 1 and not path.exists()
    store.put("clips", VOICE, b"clip")  # the clip cache keeps its own TTL
    old = time.time() - 61
    os.utime(tmp_path / "clips" / VOICE[:2] / VOICE, (old, old))
    assert store.get("clips", VOICE) == b"clip"


BAD_IDS = [
    "../x",
    "../../etc/passwd",
    "0123456789abcdef/../../x",
    "/0123456789abcdef",
    "0123456789ABCDEF",  # upper case
    "0123456789abcde",  # 15 digits
    "0" * 65,
    "0123456789abcdef\n",  # "$" alone would let this through
    "0123456789abcdeg",
    "",
    None,
    1234567890123456,
]


@pytest.mark.parametrize("asset_id", BAD_IDS, ids=repr)
def test_invalid_ids_are_refused_before_any_io(tmp_path, asset_id):
    store = LocalAssetStore(tmp_path / "assets")
    gcs = GcsAssetStore("never-contacted", local=store, client=object())  # a call on the client would fail
    for backend in (store, gcs):
        for call in (lambda s: s.get("voices", asset_id), lambda s: s.exists("voices", asset_id),
                     lambda s: s.put("voices", asset_id, b"x")):
            with pytest.raises(ValueError, match="invalid voice id") as err:
                call(backend)
            assert err.value.code == "invalid_asset_id" and err.value.status == 400
    assert _files(tmp_path) == []


@pytest.mark.parametrize("kind", ["models", "voice", "", "voices/..", "../voices", None])
def test_unknown_kinds_are_refused(tmp_path, kind):
    store = LocalAssetStore(tmp_path)
    for call in (lambda: store.get(kind, VOICE), lambda: store.exists(kind, VOICE),
                 lambda: store.put(kind, VOICE, b"x")):
        with pytest.raises(ValueError, match="unknown asset kind"):
            call()
    assert _files(tmp_path) == []


def test_ids_of_every_accepted_length(tmp_path):
    store = LocalAssetStore(tmp_path)
    for asset_id in ("a" * 16, content_hash("x")[:40], content_hash("x")):
        store.put("avatars", asset_id, asset_id.encode())
        assert store.get("avatars", asset_id) == asset_id.encode()


# --- settings and build_store ----------------------------------------------------------------------


def test_store_settings_defaults_and_env_override(monkeypatch):
    assert Settings().store == StoreSettings(bucket=None, prefix="avatar-assets", memory_items=32)
    monkeypatch.setenv("AVATAR_STORE__BUCKET", "my-bucket")
    monkeypatch.setenv("AVATAR_STORE__MEMORY_ITEMS", "8")
    store = Settings().store
    assert (store.bucket, store.prefix, store.memory_items) == ("my-bucket", "avatar-assets", 8)
    monkeypatch.setenv("AVATAR_STORE__BUCKET", "gs://my-bucket/")
    assert Settings().store.bucket == "my-bucket"
    monkeypatch.setenv("AVATAR_STORE__BUCKET", "")  # empty: back to local disk
    assert Settings().store.bucket is None
    monkeypatch.setenv("AVATAR_STORE__BUCKET", "my-bucket/some/path")
    with pytest.raises(ValueError, match=r"put any path in store\.prefix"):
        Settings()


def test_build_store_picks_local_or_gcs(tmp_path):
    local = build_store(StoreSettings(memory_items=4), tmp_path)
    assert isinstance(local, LocalAssetStore) and local.root == tmp_path / "assets"
    gcs = build_store(StoreSettings(bucket="my-bucket", prefix="team/assets/"), tmp_path)
    assert isinstance(gcs, GcsAssetStore) and isinstance(gcs.local, LocalAssetStore)
    assert gcs.local.root == tmp_path / "assets"
    assert gcs.object_name("voices", VOICE) == f"team/assets/voices/{VOICE}"
    assert GcsAssetStore("b").object_name("avatars", AVATAR) == f"avatars/{AVATAR}"  # no leading slash


# --- GCS, against the emulator ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket(gcs_emulator) -> storage.Bucket:
    return storage.Client().create_bucket(BUCKET)


@pytest.fixture
def prefix() -> str:
    return f"run{next(_prefixes)}/assets"  # each test its own corner of the shared bucket


def test_gcs_put_then_get_from_another_node(bucket, prefix, tmp_path):
    node_a = GcsAssetStore(BUCKET, prefix, local=LocalAssetStore(tmp_path / "a"))
    node_a.put("voices", VOICE, b"latents")
    node_a.put("avatars", AVATAR, b"portrait")
    # The object is in the bucket, where the name says.
    assert storage.Client().bucket(BUCKET).blob(f"{prefix}/voices/{VOICE}").download_as_bytes() == b"latents"
    assert storage.Client().bucket(BUCKET).blob(f"{prefix}/avatars/{AVATAR}").exists()

    local_b = LocalAssetStore(tmp_path / "b")  # another node: nothing on its disk
    node_b = GcsAssetStore(BUCKET, prefix, local=local_b)
    assert local_b.get("voices", VOICE) is None
    assert node_b.exists("voices", VOICE)
    assert node_b.get("voices", VOICE) == b"latents"  # so it came from the bucket
    assert node_b.get("avatars", AVATAR) == b"portrait"


def test_gcs_hit_fills_the_local_store(bucket, prefix, tmp_path):
    GcsAssetStore(BUCKET, prefix, local=LocalAssetStore(tmp_path / "a")).put("voices", VOICE, b"latents")
    node_b = GcsAssetStore(BUCKET, prefix, local=LocalAssetStore(tmp_path / "b"), recheck_s=3600)
    assert node_b.get("voices", VOICE) == b"latents"
    assert LocalAssetStore(tmp_path / "b").get("voices", VOICE) == b"latents"  # on b's disk now

    bucket.blob(f"{prefix}/voices/{VOICE}").delete()  # within recheck_s reads do not go back to the bucket
    assert node_b.get("voices", VOICE) == b"latents"
    assert node_b.exists("voices", VOICE)


def test_gcs_delete_on_one_node_reaches_the_others(bucket, prefix, tmp_path):
    node_a = GcsAssetStore(BUCKET, prefix, local=LocalAssetStore(tmp_path / "a"), recheck_s=0)
    node_b = GcsAssetStore(BUCKET, prefix, local=LocalAssetStore(tmp_path / "b"), recheck_s=0)
    node_a.put("avatars", AVATAR, b"face")
    assert node_b.get("avatars", AVATAR) == b"face"  # b keeps a local copy now
    assert node_a.delete("avatars", AVATAR)
    assert not bucket.blob(f"{prefix}/avatars/{AVATAR}").exists()
    assert node_b.get("avatars", AVATAR) is None  # b asked the bucket again, and dropped its copy
    assert not (tmp_path / "b" / "avatars" / AVATAR[:2] / AVATAR).exists()
    assert not node_a.delete("avatars", AVATAR)


def test_gcs_retention_purges_old_objects(bucket, prefix, tmp_path):
    GcsAssetStore(BUCKET, prefix, local=LocalAssetStore(tmp_path / "a"), retention_s=3600).put(
        "voices", VOICE, b"latents")
    kept = GcsAssetStore(BUCKET, prefix, local=LocalAssetStore(tmp_path / "a"), retention_s=3600)
    assert kept.purge("voices") == 0 and kept.get("voices", VOICE) == b"latents"
    time.sleep(0.05)
    expiring = GcsAssetStore(BUCKET, prefix, local=LocalAssetStore(tmp_path / "a", retention_s=0.01),
                             retention_s=0.01)
    assert expiring.purge("voices") == 2  # the local copy and the object
    assert not bucket.blob(f"{prefix}/voices/{VOICE}").exists()


def test_gcs_missing_object_is_none(bucket, prefix, tmp_path):
    store = GcsAssetStore(BUCKET, prefix, local=LocalAssetStore(tmp_path))
    assert store.get("voices", VOICE) is None
    assert not store.exists("avatars", AVATAR)
    assert _files(tmp_path) == []  # a miss caches nothing


def test_gcs_without_a_local_layer_and_without_a_prefix(bucket, tmp_path):
    asset_id = content_hash("no prefix")
    store = GcsAssetStore(BUCKET)
    store.put("avatars", asset_id, b"portrait")
    assert bucket.blob(f"avatars/{asset_id}").download_as_bytes() == b"portrait"
    assert GcsAssetStore(BUCKET, client=storage.Client()).get("avatars", asset_id) == b"portrait"


def test_gcs_failures_are_store_unavailable(bucket, prefix, tmp_path, monkeypatch, free_port):
    local = LocalAssetStore(tmp_path)
    missing_bucket = GcsAssetStore("no-such-bucket", prefix, local=local)
    with pytest.raises(StoreUnavailableError, match="cannot write gs://no-such-bucket/") as err:
        missing_bucket.put("voices", VOICE, b"latents")
    assert (err.value.code, err.value.status) == ("store_unavailable", 503)
    assert _files(tmp_path) == []  # a failed upload leaves nothing behind locally

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port}")  # nothing listens
    down = GcsAssetStore(BUCKET, prefix, local=local, retry_deadline_s=0.5)
    for call in (lambda: down.get("voices", VOICE), lambda: down.exists("voices", VOICE),
                 lambda: down.put("voices", VOICE, b"latents")):
        with pytest.raises(StoreUnavailableError, match=f"gs://{BUCKET}/{prefix}/voices/{VOICE}"):
            call()
    assert _files(tmp_path) == []


def test_every_kind_round_trips_through_gcs(bucket, prefix, tmp_path):
    for kind in KINDS:
        asset_id = content_hash(kind)
        node_a = GcsAssetStore(BUCKET, prefix, local=LocalAssetStore(tmp_path / "a"))
        node_a.put(kind, asset_id, kind.encode())
        fresh = GcsAssetStore(BUCKET, prefix, local=LocalAssetStore(tmp_path / "b"))
        assert fresh.get(kind, asset_id) == kind.encode()
