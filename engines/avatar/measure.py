"""Measure rendered video frames (pixels only, never the motion track): mouth shape and eye openness.

Used by the tests and the evaluator to check that what the renderer *drew* follows the speech: dlib's
68 landmarks are fitted on every frame, inside the face box detected on the first frame (or on every
frame with ``redetect=True``), and turned into scale-free ratios.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from engines.avatar.faces import (
    LEFT_EYE,
    MOUTH_LEFT,
    MOUTH_RIGHT,
    RIGHT_EYE,
    FaceBox,
    detect_faces,
    fit_landmarks,
)
from engines.errors import NoFaceError

DEFAULT_MEASURE_UPSAMPLE = 1  # rendered faces are ~half the frame: one upsampling level is plenty


def mouth_openness(landmarks: np.ndarray) -> float:
    """Inner-lip gap (mean of the three vertical pairs) over the outer mouth width."""
    gap = np.linalg.norm(landmarks[[61, 62, 63]] - landmarks[[67, 66, 65]], axis=1).mean()
    width = np.linalg.norm(landmarks[MOUTH_RIGHT] - landmarks[MOUTH_LEFT])
    return float(gap / max(width, 1e-6))


def mouth_width(landmarks: np.ndarray) -> float:
    """Outer mouth width over the distance between the outer eye corners (36, 45): spread lips widen it."""
    width = np.linalg.norm(landmarks[MOUTH_RIGHT] - landmarks[MOUTH_LEFT])
    eyes = np.linalg.norm(landmarks[45] - landmarks[36])
    return float(width / max(eyes, 1e-6))


def mouth_roundness(landmarks: np.ndarray) -> float:
    """Outer lip height (51-57) over outer width: rounded lips (o/u) are taller for their width."""
    height = np.linalg.norm(landmarks[51] - landmarks[57])
    width = np.linalg.norm(landmarks[MOUTH_RIGHT] - landmarks[MOUTH_LEFT])
    return float(height / max(width, 1e-6))


def eye_openness(landmarks: np.ndarray) -> float:
    """Eye aspect ratio (Soukupova & Cech 2016), averaged over both eyes: ~0.3 open, ~0.1 closed."""
    ratios = []
    for eye in (RIGHT_EYE, LEFT_EYE):
        p = landmarks[eye]
        vertical = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
        ratios.append(vertical / max(2.0 * np.linalg.norm(p[0] - p[3]), 1e-6))
    return float(np.mean(ratios))


@dataclass(frozen=True)
class FrameMeasurement:
    mouth_open: float
    eye_open: float
    mouth_width: float
    mouth_round: float
    landmarks: np.ndarray  # [68, 2] float32, frame pixels


@dataclass(frozen=True)
class VideoMeasurement:
    mouth_open: np.ndarray  # per frame
    eye_open: np.ndarray  # per frame
    mouth_width: np.ndarray  # per frame
    mouth_round: np.ndarray  # per frame


class FaceMeter:
    """Per-frame face measurements for a clip of one face (the largest one in the first frame)."""

    def __init__(self, *, redetect: bool = False, max_upsample: int = DEFAULT_MEASURE_UPSAMPLE) -> None:
        self.redetect = redetect
        self.max_upsample = max_upsample
        self._box: FaceBox | None = None

    def measure(self, frame: np.ndarray) -> FrameMeasurement:
        """Landmarks and ratios for one RGB frame; ``NoFaceError`` if no face was ever detected."""
        if self._box is None or self.redetect:
            faces = detect_faces(frame, max_upsample=self.max_upsample)
            if faces:
                self._box = faces[0]
            elif self._box is None:
                raise NoFaceError("no face detected in the frame")
        landmarks = fit_landmarks(frame, self._box)
        return FrameMeasurement(mouth_openness(landmarks), eye_openness(landmarks), mouth_width(landmarks),
                                mouth_roundness(landmarks), landmarks)

    def measure_video(self, frames: Iterable[np.ndarray]) -> VideoMeasurement:
        measured = [self.measure(frame) for frame in frames]
        return VideoMeasurement(
            mouth_open=np.array([m.mouth_open for m in measured], np.float32),
            eye_open=np.array([m.eye_open for m in measured], np.float32),
            mouth_width=np.array([m.mouth_width for m in measured], np.float32),
            mouth_round=np.array([m.mouth_round for m in measured], np.float32),
        )
