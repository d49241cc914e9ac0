"""Portrait preparation: decode, find the largest face, crop head-and-shoulders, fit 68 landmarks.

A ``Portrait`` is plain data (crop + landmarks + content key) and serialises to npz bytes, so prepared
portraits can be cached on disk by content hash; renderers cache their own precomputation per key.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engines.avatar.faces import (
    DEFAULT_DETECT_SIDE,
    DEFAULT_MAX_UPSAMPLE,
    LEFT_EYE,
    RIGHT_EYE,
    detect_faces,
    fit_landmarks,
)
from engines.errors import InputError, InvalidImageError, NoFaceError, public_message

ImageSource = np.ndarray | bytes | str | Path

DEFAULT_SIZE = 256
MIN_SIZE, MAX_SIZE = 64, 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_FACE_WIDTH = 0.5  # face (jaw-to-jaw) width as a share of the crop width
DEFAULT_EYE_HEIGHT = 0.4  # eye line as a share of the crop height, from the top
PAD_BLUR = 0.06  # blur of the area beyond the photo's edge, as a share of the crop side
PAD_FADE = 0.06  # ... reached this far (share of the crop side) beyond the edge
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Portrait:
    """A prepared portrait: the square crop the renderers animate and its landmarks."""

    image: np.ndarray  # [size, size, 3] uint8 RGB
    landmarks: np.ndarray  # [68, 2] float32, (x, y) in crop pixels
    key: str  # sha256 over the source content and the preparation settings

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, version=np.int32(_FORMAT_VERSION), image=self.image, landmarks=self.landmarks,
            key=np.array(self.key),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Portrait:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                if int(archive["version"]) != _FORMAT_VERSION:
                    raise ValueError(f"portrait format {int(archive['version'])} is not {_FORMAT_VERSION}")
                image, landmarks, key = archive["image"], archive["landmarks"], str(archive["key"])
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"not a serialised portrait: {exc}") from exc
        square_rgb = image.ndim == 3 and image.shape[0] == image.shape[1] and image.shape[2] == 3
        if image.dtype != np.uint8 or not square_rgb:
            raise ValueError(f"serialised portrait image has shape {image.shape} and dtype {image.dtype}")
        if landmarks.shape != (68, 2):
            raise ValueError(f"serialised portrait landmarks have shape {landmarks.shape}")
        return cls(image=image, landmarks=landmarks.astype(np.float32), key=key)


def decode_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, bytes]:
    """RGB uint8 pixels and the bytes that identify the source (file content, or array bytes + shape)."""
    if isinstance(source, np.ndarray):
        return _array_image(source, max_pixels), f"{source.shape}".encode() + source.tobytes()
    if isinstance(source, str | Path):
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError as exc:
            raise InputError(f"image file not found: {source}", code="image_not_found") from exc
        except OSError as exc:
            raise InvalidImageError(f"could not read image file {source}: {exc}") from exc
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        raise InvalidImageError(f"unsupported image source type {type(source).__name__}")
    return _decode_bytes(data, max_pixels), data


def _array_image(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.dtype != np.uint8:
        raise InvalidImageError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise InvalidImageError(f"expected an [H, W, 3] RGB array, got shape {array.shape}")
    if array.shape[0] * array.shape[1] > max_pixels:
        raise InvalidImageError(f"image has more than {max_pixels} pixels")
    return np.ascontiguousarray(array[:, :, :3])


def _decode_bytes(data: bytes, max_pixels: int) -> np.ndarray:
    if not data:
        raise InvalidImageError("the image is empty")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size  # header only: refuse decompression bombs before decoding
            if width * height > max_pixels:
                raise InvalidImageError(f"image is {width}x{height}, more than {max_pixels} pixels")
            image = _eight_bit(ImageOps.exif_transpose(opened))
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image.convert("RGBA"))
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except InvalidImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"could not decode the image: {public_message(str(exc))}") from exc


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale (``I;16*``, ``I``, ``F``) scaled to 8-bit ``L``: PIL's own conversion
    clips them, which turns a 16-bit grayscale PNG almost white (and its face unfindable)."""
    if not (image.mode.startswith("I") or image.mode == "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    top = float(values.max(initial=0.0))
    if image.mode == "F" and top <= 1.0:
        scaled = values * 255.0  # a float image in [0, 1]
    elif image.mode.startswith("I;16") or top > 255:
        scaled = values / 257.0  # 16-bit range
    else:
        scaled = values
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def prepare_portrait(
    source: ImageSource,
    size: int = DEFAULT_SIZE,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    face_width: float = DEFAULT_FACE_WIDTH,
    eye_height: float = DEFAULT_EYE_HEIGHT,
    detect_side: int = DEFAULT_DETECT_SIDE,
    max_upsample: int = DEFAULT_MAX_UPSAMPLE,
) -> Portrait:
    """Detect the largest face and crop a ``size`` x ``size`` head-and-shoulders portrait around it.

    Raises ``InvalidImageError`` for undecodable input and ``NoFaceError`` when no face is found.
    """
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"portrait size must be within {MIN_SIZE}..{MAX_SIZE} px, got {size}")
    rgb, identity = decode_image(source, max_pixels=max_pixels)
    faces = detect_faces(rgb, detect_side=detect_side, max_upsample=max_upsample)
    if not faces:
        raise NoFaceError(
            "no face found in the image; use a well-lit, roughly frontal photo where the face is clearly "
            "visible"
        )
    landmarks = fit_landmarks(rgb, faces[0])
    x0, y0, side = _crop_box(landmarks, face_width, eye_height)
    crop = _crop_padded(rgb, x0, y0, side)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    image = cv2.resize(crop, (size, size), interpolation=interpolation)
    scale = size / side
    crop_landmarks = ((landmarks - np.array([x0, y0], np.float32)) * scale).astype(np.float32)
    digest = hashlib.sha256(identity)
    digest.update(f"|size={size}|face_width={face_width}|eye_height={eye_height}".encode())
    return Portrait(image=np.ascontiguousarray(image), landmarks=crop_landmarks, key=digest.hexdigest())


def _crop_box(landmarks: np.ndarray, face_width: float, eye_height: float) -> tuple[int, int, int]:
    """Top-left corner and side of the square crop in source pixels."""
    eyes = (landmarks[RIGHT_EYE].mean(axis=0) + landmarks[LEFT_EYE].mean(axis=0)) / 2
    jaw_width = float(np.linalg.norm(landmarks[16] - landmarks[0]))
    side = max(round(jaw_width / face_width), 8)
    center_x = (landmarks[0, 0] + landmarks[16, 0]) / 2
    return round(center_x - side / 2), round(eyes[1] - eye_height * side), side


def _crop_padded(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """``image[y0:y0+side, x0:x0+side]``; where the square leaves the photo, the edge pixels extended
    and blurred more with distance, so it reads as out-of-focus surroundings rather than as streaks
    (a mirror would put a ghost of the face there)."""
    height, width = image.shape[:2]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y0 + side - height), max(0, x0 + side - width)
    inside = image[max(y0, 0) : min(y0 + side, height), max(x0, 0) : min(x0 + side, width)]
    if not (top or left or bottom or right):
        return inside
    padded = np.pad(inside, ((top, bottom), (left, right), (0, 0)), mode="edge")
    blurred = cv2.GaussianBlur(padded, (0, 0), max(2.0, PAD_BLUR * side))
    ys, xs = np.arange(side), np.arange(side)
    dy = np.maximum(top - ys, ys - (side - bottom - 1)).clip(min=0)
    dx = np.maximum(left - xs, xs - (side - right - 1)).clip(min=0)
    fade = np.clip(np.maximum(dy[:, None], dx[None, :]) / max(1.0, PAD_FADE * side), 0.0, 1.0)[..., None]
    return (padded + (blurred.astype(np.float32) - padded) * fade).astype(np.uint8)
