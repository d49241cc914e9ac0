"""Portraits in every common pixel format (issue 15, item 4): the real face in tests/data/biden.jpg,
converted with PIL to each form a camera or an editor writes, is decoded to the right RGB and found."""

import io

import numpy as np
import pytest
from PIL import Image

from engines.avatar.portrait import decode_image, prepare_portrait


@pytest.fixture(scope="module")
def face(data_dir) -> Image.Image:
    with Image.open(data_dir / "biden.jpg") as image:
        return image.convert("RGB")


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _gray16(face: Image.Image) -> bytes:
    gray = np.asarray(face.convert("L"), np.uint16) * 257  # full 16-bit range
    return _encode(Image.fromarray(gray.astype(np.uint16)), "PNG")


def _alpha(face: Image.Image) -> bytes:
    rgba = face.convert("RGBA")
    rgba.putalpha(255)
    return _encode(rgba, "PNG")


def _exif_rotated(face: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored pixels must be turned 90 degrees clockwise to view
    return _encode(face.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=95)


FORMS = {
    "gray16_png": _gray16,
    "gray8_png": lambda f: _encode(f.convert("L"), "PNG"),
    "palette_png": lambda f: _encode(f.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG"),
    "rgba_png": _alpha,
    "la_png": lambda f: _encode(f.convert("LA"), "PNG"),
    "cmyk_jpeg": lambda f: _encode(f.convert("CMYK"), "JPEG", quality=95),
    "exif_rotated_jpeg": _exif_rotated,
    "webp": lambda f: _encode(f, "WEBP", quality=90),
}


@pytest.mark.parametrize("form", FORMS)
def test_every_pixel_format_is_converted_and_the_face_found(face, form):
    data = FORMS[form](face)
    rgb, _ = decode_image(data)
    reference = np.asarray(face.convert("L") if "gray" in form or form == "la_png" else face, np.float32)
    decoded = rgb.astype(np.float32).mean(axis=2) if reference.ndim == 2 else rgb.astype(np.float32)
    assert rgb.dtype == np.uint8 and rgb.shape[:2] == (face.height, face.width)
    difference = float(np.abs(decoded - reference).mean())
    assert difference < 12, f"{form}: mean difference {difference}"
    portrait = prepare_portrait(data, 256)
    assert portrait.image.shape == (256, 256, 3)
