"""dlib face detection (HOG) and 68-point landmarks, shared by portrait preparation and frame measurement."""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engines.errors import ModelUnavailableError

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
DEFAULT_DETECT_SIDE = 640  # detection runs on a copy this size first (fast), upsampling only if needed
DEFAULT_MAX_UPSAMPLE = 2
DEFAULT_SCORE_RATIO = 0.35  # drop detections less confident than this share of the best one

# 68-point indices (iBUG 300-W layout).
JAW = slice(0, 17)
RIGHT_BROW = slice(17, 22)  # subject's right = image left
LEFT_BROW = slice(22, 27)
NOSE_BRIDGE_TOP, NOSE_TIP, NOSE_BASE = 27, 30, 33
RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54  # outer corners, image left/right
INNER_UPPER = (60, 61, 62, 63, 64)  # inner lip, corner to corner along the upper lip
INNER_LOWER = (60, 67, 66, 65, 64)  # inner lip, corner to corner along the lower lip

_lock = threading.Lock()  # dlib objects are not documented as thread-safe


@dataclass(frozen=True)
class FaceBox:
    left: float
    top: float
    right: float
    bottom: float
    score: float = 0.0  # HOG detector confidence; real faces are typically 0.5-2.5

    @property
    def area(self) -> float:
        return max(self.right - self.left, 0.0) * max(self.bottom - self.top, 0.0)

    def scaled(self, factor: float) -> FaceBox:
        return FaceBox(
            self.left * factor, self.top * factor, self.right * factor, self.bottom * factor, self.score
        )


def predictor_path() -> Path:
    """The 68-point model inside ``face_recognition_models``.

    Located without importing the package: its ``__init__`` needs ``pkg_resources``, which recent
    setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError("face landmarks need the face_recognition_models package: pip install it")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / PREDICTOR_FILE
    if not path.is_file():
        raise ModelUnavailableError(f"face_recognition_models is installed but lacks models/{PREDICTOR_FILE}")
    return path


@cache
def _models() -> tuple[Any, Any]:
    try:
        import dlib
    except ImportError as exc:
        raise ModelUnavailableError("face detection needs dlib: pip install dlib-bin") from exc
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path()))


def to_gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def detect_faces(
    image: np.ndarray,
    *,
    detect_side: int = DEFAULT_DETECT_SIDE,
    max_upsample: int = DEFAULT_MAX_UPSAMPLE,
    score_ratio: float = DEFAULT_SCORE_RATIO,
) -> list[FaceBox]:
    """Faces in an RGB or gray image, largest first, in the image's pixel coordinates.

    Tries a pyramid from cheap to expensive: the image scaled to ``detect_side`` (long side), then twice
    that, and so on up to ``max_upsample`` doublings, stopping at the first level that finds a face.
    Large faces are found at the first level; small faces in big photos at a finer one. Detections far
    less confident than the best (below ``score_ratio`` of its score) are dropped: face-like patterns
    (a badge, a print) can be as large as the real face but score much lower.
    """
    gray = to_gray(image)
    long_side = max(gray.shape[:2])
    base = min(1.0, detect_side / long_side)
    detector, _ = _models()
    for level in range(max_upsample + 1):
        scale = base * 2**level
        upsample = 0
        if scale > 1.0:  # past native resolution: let dlib upsample the full-size image instead
            upsample = max(0, round(np.log2(scale)))
            scale = 1.0
        work = gray
        if scale < 1.0:
            work = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        with _lock:
            rects, scores, _ = detector.run(work, upsample, 0.0)
        if len(rects):
            best = max(scores)
            boxes = [
                FaceBox(r.left(), r.top(), r.right(), r.bottom(), s).scaled(1.0 / scale)
                for r, s in zip(rects, scores, strict=True)
                if s >= score_ratio * best
            ]
            return sorted(boxes, key=lambda box: box.area, reverse=True)
    return []


def fit_landmarks(image: np.ndarray, box: FaceBox) -> np.ndarray:
    """68 (x, y) landmarks, float32, for the face in ``box``."""
    import dlib

    _, predictor = _models()
    rect = dlib.rectangle(round(box.left), round(box.top), round(box.right), round(box.bottom))
    with _lock:
        shape = predictor(to_gray(image), rect)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)
