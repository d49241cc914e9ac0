import cv2
import numpy as np
import pytest
from skimage import data

from engines.avatar.faces import LEFT_EYE, RIGHT_EYE, detect_faces
from engines.avatar.portrait import Portrait, prepare_portrait
from engines.errors import InputError, InvalidImageError, NoFaceError


@pytest.fixture(scope="module")
def biden_rgb(data_dir) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(data_dir / "biden.jpg")), cv2.COLOR_BGR2RGB)


def _png(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


def _check_layout(portrait: Portrait, size: int) -> None:
    assert portrait.image.shape == (size, size, 3) and portrait.image.dtype == np.uint8
    assert portrait.size == size
    assert portrait.landmarks.shape == (68, 2)
    assert np.all((portrait.landmarks >= 0) & (portrait.landmarks < size))
    eyes_y = (portrait.landmarks[RIGHT_EYE, 1].mean() + portrait.landmarks[LEFT_EYE, 1].mean()) / 2
    assert 0.35 < eyes_y / size < 0.45  # eyes around 40% from the top
    face_width = np.linalg.norm(portrait.landmarks[16] - portrait.landmarks[0])
    assert 0.4 < face_width / size < 0.6  # face about half the crop width


def _scaled(rgb: np.ndarray, factor: float) -> np.ndarray:
    return cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64))[0, 1])


@pytest.mark.parametrize("size", [256, 360])
def test_prepare_astronaut(size):
    _check_layout(prepare_portrait(data.astronaut(), size), size)


def test_prepare_biden_from_path_and_bytes(data_dir):
    """A small face in a tall photo: found, and the same key whatever the source form."""
    from_path = prepare_portrait(data_dir / "biden.jpg", 256)
    from_bytes = prepare_portrait((data_dir / "biden.jpg").read_bytes(), 256)
    _check_layout(from_path, 256)
    assert from_path.key == from_bytes.key
    np.testing.assert_array_equal(from_path.image, from_bytes.image)
    assert prepare_portrait(data_dir / "biden.jpg", 360).key != from_path.key


def test_small_face_needs_upsampling(biden_rgb):
    small = cv2.resize(biden_rgb, None, fx=0.13, fy=0.13, interpolation=cv2.INTER_AREA)  # face ~40 px
    assert not detect_faces(small, max_upsample=0)
    _check_layout(prepare_portrait(small, 256), 256)


def test_face_near_the_edge_is_padded():
    portrait = prepare_portrait(data.astronaut()[60:, 150:], 256)  # crop box leaves the photo
    _check_layout(portrait, 256)


@pytest.mark.parametrize("image", [
    np.tile(np.linspace(0, 255, 400, dtype=np.uint8)[None, :, None], (300, 1, 3)),
    data.chelsea(),
], ids=["gradient", "cat"])
def test_no_face(image):
    with pytest.raises(NoFaceError, match="no face"):
        prepare_portrait(image)
    with pytest.raises(NoFaceError):
        prepare_portrait(_png(image))


@pytest.mark.parametrize("source", [
    b"definitely not an image",
    b"",
    b"\x89PNG\r\n\x1a\n" + bytes(64),
    np.zeros((10, 10, 3), np.float32),
    np.zeros((10, 10, 2), np.uint8),
], ids=["garbage", "empty", "bad-png", "float-array", "two-channels"])
def test_invalid_image(source):
    with pytest.raises(InvalidImageError) as raised:
        prepare_portrait(source)
    assert raised.value.code == "invalid_image" and raised.value.status == 415


def test_truncated_jpeg_and_limits(data_dir, tmp_path):
    with pytest.raises(InvalidImageError):
        prepare_portrait((data_dir / "biden.jpg").read_bytes()[:2000])
    with pytest.raises(InvalidImageError, match="pixels"):
        prepare_portrait(data_dir / "biden.jpg", max_pixels=1000 * 1000)
    with pytest.raises(InputError):
        prepare_portrait(tmp_path / "missing.jpg")
    with pytest.raises(InputError):
        prepare_portrait(data.astronaut(), size=32)


def test_largest_face_wins(biden_rgb):
    astronaut = data.astronaut()
    biden = biden_rgb[100:800, 300:900]
    alone = {
        "biden": prepare_portrait(biden, 256).image,
        "astronaut": prepare_portrait(astronaut, 256).image,
    }
    layouts = {
        # (large face, small face): faces ~185 px vs ~90 px, both found at the same detection level
        "biden": (_scaled(biden, 0.6), astronaut[0:300, 100:400]),
        "astronaut": (_scaled(astronaut[0:300, 100:400], 2.0), _scaled(biden, 0.3)),
    }
    for winner, (large, small) in layouts.items():
        height = max(large.shape[0], small.shape[0]) + 20
        canvas = np.full((height, large.shape[1] + small.shape[1] + 30, 3), 128, np.uint8)
        canvas[10 : 10 + large.shape[0], 10 : 10 + large.shape[1]] = large
        canvas[10 : 10 + small.shape[0], 20 + large.shape[1] : 20 + large.shape[1] + small.shape[1]] = small
        assert len(detect_faces(canvas)) == 2
        chosen = prepare_portrait(canvas, 256).image
        loser = "astronaut" if winner == "biden" else "biden"
        assert _similarity(chosen, alone[winner]) > _similarity(chosen, alone[loser]) + 0.2, winner


def test_confident_face_beats_a_larger_lookalike():
    """Tilted 15 degrees, the astronaut's face scores lower, and her mission patch (slightly larger)
    scores as a weak face; the weak detection must not win on size."""
    image = data.astronaut()
    turn = cv2.getRotationMatrix2D((256, 512 / 3), -15, 1.0)
    tilted = cv2.warpAffine(image, turn, (512, 512), borderMode=cv2.BORDER_REFLECT)
    face = detect_faces(tilted)[0]
    assert (face.top + face.bottom) / 2 < 200  # the face, not the patch on the chest (y ~ 350)


def test_portrait_round_trips_through_bytes():
    portrait = prepare_portrait(data.astronaut(), 256)
    restored = Portrait.from_bytes(portrait.to_bytes())
    assert restored.key == portrait.key and restored.size == 256
    np.testing.assert_array_equal(restored.image, portrait.image)
    np.testing.assert_array_equal(restored.landmarks, portrait.landmarks)
    with pytest.raises(ValueError):
        Portrait.from_bytes(b"not an archive")
