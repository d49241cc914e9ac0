"""The served stages without Ray: prepared state shared through GCS between two 'nodes'."""

import pytest
from google.cloud import storage

from realtime_avatar.config import Settings
from realtime_avatar.stages import Animation, UnknownAssetError

BUCKET = "stages-test"


@pytest.fixture(scope="module")
def bucket(gcs_emulator):
    return storage.Client().create_bucket(BUCKET)


def _node(tmp_path, name: str) -> Animation:
    settings = Settings(cache_dir=tmp_path / name, store={"bucket": BUCKET, "prefix": "assets"})
    return Animation(settings)  # its store is built from the settings: GCS over a local dir


def test_an_avatar_prepared_on_one_node_renders_on_another(bucket, tmp_path, data_dir):
    first, second = _node(tmp_path, "node-a"), _node(tmp_path, "node-b")
    avatar_id = first.prepare_avatar((data_dir / "biden.jpg").read_bytes())["avatar_id"]
    assert bucket.blob(f"assets/avatars/{avatar_id}").exists()
    portrait = second.portrait(avatar_id)  # node B has never seen the image: GCS has the portrait
    assert portrait.image.shape == (256, 256, 3)
    assert (portrait.image == first.portrait(avatar_id).image).all()


def test_unknown_and_malformed_avatar_ids_are_not_found(bucket, tmp_path):
    node = _node(tmp_path, "node-c")
    for avatar_id in ("0" * 32, "../../etc/passwd", "ABC"):
        with pytest.raises(UnknownAssetError) as caught:
            node.portrait(avatar_id)
        assert caught.value.status == 404 and caught.value.code == "avatar_not_found"
