"""LivePortrait behind the avatar renderer contract: ``render(portrait, motion) -> [N, S, S, 3] uint8``.

Per portrait (cached by ``portrait.key``): a face crop is cut from the head-and-shoulders portrait with a
similarity transform fitted to its 68 landmarks (LivePortrait's own crop convention: landmark box scaled
2.3, centre raised by 0.125 of the crop, eyes-to-mouth axis upright), resized to the model input, and its
source state and eye / lip openness are computed once. Per frame: the MotionTrack row becomes
FrameControls, the model renders the crop, and the crop is warped back into the portrait through a soft
elliptical mask that reaches zero inside the crop, so neither the crop's edges nor its padding show.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.avatar.faces import LEFT_EYE, RIGHT_EYE
from engines.avatar.measure import mouth_openness
from engines.avatar.portrait import Portrait
from engines.motion.track import MotionTrack

from .config import LivePortraitConfig
from .model import FrameControls, LivePortraitModel, SourceState

CROP_SCALE = 2.3  # crop side / landmark box side (LivePortrait's source crop)
CROP_RAISE = 0.125  # crop centre above the landmark box centre, as a share of the crop side
MOUTH = slice(48, 68)
# Paste mask, in crop coordinates (shares of the crop side): an ellipse that covers the head and the top
# of the neck, opaque within MASK_SOLID of its radius and easing to exactly zero at its edge.
MASK_CENTER = (0.5, 0.5)
MASK_AXES = (0.42, 0.46)
MASK_SOLID = 0.7
DEFAULT_MAX_LIP_RATIO = 0.5  # lip-open ratio (inner-lip gap / mouth width) for mouth_open = 1: a wide "ah"


def face_crop_transform(landmarks: np.ndarray, side: int) -> np.ndarray:
    """2 x 3 affine from portrait pixels to a ``side`` x ``side`` upright face crop."""
    eyes = (landmarks[RIGHT_EYE].mean(axis=0) + landmarks[LEFT_EYE].mean(axis=0)) / 2
    down = landmarks[MOUTH].mean(axis=0) - eyes  # the face's vertical axis, towards the chin
    down = down / max(float(np.linalg.norm(down)), 1e-6)
    right = np.array([down[1], -down[0]])  # ``down`` turned 90 degrees: (0, 1) -> (1, 0)
    axes = np.stack([right, down])  # rows: crop x and y directions in portrait pixels
    mean = landmarks.mean(axis=0)
    local = (landmarks - mean) @ axes.T
    low, high = local.min(axis=0), local.max(axis=0)
    crop_side = float((high - low).max()) * CROP_SCALE
    centre_local = (low + high) / 2 - np.array([0.0, CROP_RAISE * crop_side])
    centre = mean + centre_local @ axes
    linear = side / crop_side * axes
    # OpenCV pixel centres sit at integers: the crop's centre is (side - 1) / 2.
    return np.hstack([linear, ((side - 1) / 2 - linear @ centre)[:, None]])


def rescale_crop_transform(matrix: np.ndarray, factor: float) -> np.ndarray:
    """The same crop at ``factor`` times the resolution, with cv2.resize's pixel-centre convention."""
    scaled = matrix * factor
    scaled[:, 2] += 0.5 * (factor - 1.0)
    return scaled


def paste_mask_template(side: int) -> np.ndarray:
    """``side`` x ``side`` float32 mask in crop coordinates: 1 on the head, smoothly 0 at the ellipse edge."""
    coords = (np.arange(side, dtype=np.float32) + 0.5) / side
    dx = (coords[None, :] - MASK_CENTER[0]) / MASK_AXES[0]
    dy = (coords[:, None] - MASK_CENTER[1]) / MASK_AXES[1]
    t = np.clip((1.0 - np.sqrt(dx**2 + dy**2)) / (1.0 - MASK_SOLID), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)  # smoothstep: no visible rim


def eye_ratios(landmarks: np.ndarray) -> tuple[float, float]:
    """Per-eye lid gap / eye width from dlib's 68 points, image-left eye first.

    The 68-point analogue of the ratio LivePortrait's eye MLP was trained on (its own 203-point landmarks);
    only its relation to the targets matters: a target equal to the source mean leaves the eyes as they are.
    """
    ratios = []
    for eye in (RIGHT_EYE, LEFT_EYE):
        p = landmarks[eye]
        vertical = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
        ratios.append(float(vertical / max(2.0 * np.linalg.norm(p[0] - p[3]), 1e-6)))
    return ratios[0], ratios[1]


@dataclass(frozen=True)
class PreparedPortrait:
    source: SourceState
    to_crop: np.ndarray  # 2 x 3 affine, portrait pixels -> rendered crop pixels (crop_side square)
    crop_side: int  # the face crop's side in portrait pixels: the model output is resized to this first
    mask: np.ndarray  # [S, S] float32 paste mask in portrait pixels
    eye_open: float  # the source's mean eye ratio: the target for open eyes


class LivePortraitRenderer:
    """LivePortrait (KwaiVGI) animating a prepared portrait from a MotionTrack.

    ``weights_dir`` holds the official layout (``avatar models fetch liveportrait``); missing or mismatched
    files raise ``ModelUnavailableError`` here, at construction. ``output_size`` (default: the portrait's
    size) is the side of the returned frames. ``config`` exists for tests with small random networks.
    """

    def __init__(
        self,
        weights_dir: str | Path,
        device: str = "cpu",
        fp16: bool = False,
        compile: bool = False,
        output_size: int | None = None,
        batch_size: int = 8,
        max_lip_ratio: float = DEFAULT_MAX_LIP_RATIO,
        cache_size: int = 8,
        config: LivePortraitConfig | None = None,
    ) -> None:
        cfg = config or LivePortraitConfig()
        self.model = LivePortraitModel.from_weights(
            Path(weights_dir).expanduser(),
            device=device,
            fp16=fp16,
            compile=compile,
            # The decoder's native size (512 at release sizes): no resampling on the device.
            output_size=cfg.input_size * cfg.spade.upscale,
            batch_size=batch_size,
            config=cfg,
        )
        self.output_size = output_size
        self.max_lip_ratio = max_lip_ratio
        self.cache_size = cache_size
        # Compiled graphs are specialised to the batch size: pad a short last batch instead of recompiling.
        self._pad_batches = compile and self.model.device.type == "cuda"
        self._prepared: OrderedDict[str, PreparedPortrait] = OrderedDict()
        self._lock = threading.Lock()

    def prepare(self, portrait: Portrait) -> PreparedPortrait:
        """The portrait's face crop, source state and paste mask, computed once per ``portrait.key``."""
        with self._lock:
            prepared = self._prepared.get(portrait.key)
            if prepared is not None:
                self._prepared.move_to_end(portrait.key)
                return prepared
        prepared = self._prepare(portrait)
        with self._lock:
            self._prepared[portrait.key] = prepared
            while len(self._prepared) > self.cache_size:
                self._prepared.popitem(last=False)
        return prepared

    def _prepare(self, portrait: Portrait) -> PreparedPortrait:
        landmarks = portrait.landmarks.astype(np.float64)
        size = self.model.cfg.input_size
        to_input = face_crop_transform(landmarks, size)
        crop = cv2.warpAffine(
            portrait.image, to_input, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        eyes = eye_ratios(landmarks)
        source = self.model.prepare_source(crop, eye_ratio=eyes, lip_ratio=mouth_openness(landmarks))
        # Crop side in portrait pixels = input side / the transform's scale (the norm of its first row).
        crop_side = max(round(size / float(np.linalg.norm(to_input[0, :2]))), 8)
        to_crop = rescale_crop_transform(to_input, crop_side / size)
        mask = cv2.warpAffine(
            paste_mask_template(crop_side), to_crop, (portrait.size, portrait.size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
        )
        return PreparedPortrait(source, to_crop, crop_side, mask, float(np.mean(eyes)))

    def controls(self, prepared: PreparedPortrait, motion: MotionTrack) -> list[FrameControls]:
        """MotionTrack rows -> LivePortrait controls: lip / eye ratios and head rotation deltas (degrees)."""
        mouth = np.clip(motion.mouth_open, 0.0, 1.0) * self.max_lip_ratio
        eyes = (1.0 - np.clip(motion.blink, 0.0, 1.0)) * prepared.eye_open
        return [
            FrameControls(lip_open=float(m), eye_open=float(e), pitch=float(p), yaw=float(y), roll=float(r))
            for m, e, p, y, r in zip(mouth, eyes, motion.pitch, motion.yaw, motion.roll, strict=True)
        ]

    def render(self, portrait: Portrait, motion: MotionTrack) -> np.ndarray:
        prepared = self.prepare(portrait)
        side = self.output_size or portrait.size
        if len(motion) == 0:
            return np.zeros((0, side, side, 3), np.uint8)
        controls = self.controls(prepared, motion)
        padding = (-len(controls)) % self.model.batch_size if self._pad_batches else 0
        crops = self.model.animate_batch(prepared.source, controls + controls[-1:] * padding)[: len(controls)]
        frames = np.empty((len(controls), side, side, 3), np.uint8)
        for index, crop in enumerate(crops):
            frame = self._paste(portrait, prepared, crop)
            if side != portrait.size:
                frame = cv2.resize(frame, (side, side), interpolation=cv2.INTER_AREA)
            frames[index] = frame
        return frames

    @staticmethod
    def _paste(portrait: Portrait, prepared: PreparedPortrait, crop: np.ndarray) -> np.ndarray:
        shrink = crop.shape[0] > prepared.crop_side
        crop = cv2.resize(
            crop, (prepared.crop_side, prepared.crop_side),
            interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
        )
        warped = cv2.warpAffine(
            crop, prepared.to_crop, (portrait.size, portrait.size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
        )
        base = portrait.image.astype(np.float32)
        blended = base + (warped.astype(np.float32) - base) * prepared.mask[..., None]
        return np.clip(blended + 0.5, 0, 255).astype(np.uint8)  # mask 0: exactly the portrait's pixel
