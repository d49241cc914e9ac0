"""Measure rendered video frames (pixels only, never the motion track): mouth and eye openness.

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
    landmarks: np.ndarray  # [68, 2] float32, frame pixels


@dataclass(frozen=True)
class VideoMeasurement:
    mouth_open: np.ndarray  # per frame
    eye_open: np.ndarray  # per frame


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
        return FrameMeasurement(mouth_openness(landmarks), eye_openness(landmarks), landmarks)

    def measure_video(self, frames: Iterable[np.ndarray]) -> VideoMeasurement:
        measured = [self.measure(frame) for frame in frames]
        return VideoMeasurement(
            mouth_open=np.array([m.mouth_open for m in measured], np.float32),
            eye_open=np.array([m.eye_open for m in measured], np.float32),
        )
