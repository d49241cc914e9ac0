"""LivePortrait inference: prepare a source portrait once, then render frames from per-frame controls.

Controls are what an audio-driven motion engine produces: lip-open and eye-open ratios and head
rotation deltas. Eye / lip ratios use LivePortrait's landmark definition (eyelid gap / eye width,
inner-lip gap / mouth width); the retargeting MLPs turn (source ratio, target ratio) into keypoint
offsets, the stitching MLP keeps the result aligned with the source crop, and W + G render it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engines.errors import InputError, InvalidImageError

from .config import NUM_KP, LivePortraitConfig
from .keypoints import bins_to_degrees, eye_delta, lip_delta, rotation_matrix, stitch, transform_keypoints
from .motion import MotionOutput
from .weights import LivePortraitRuntime, load_runtime

# Used when the caller has no landmark measurement of the source: open eyes, closed mouth.
DEFAULT_SOURCE_EYE_RATIO = 0.35
DEFAULT_SOURCE_LIP_RATIO = 0.0


@dataclass(frozen=True)
class FrameControls:
    """One frame of motion. ``None`` ratios leave that region as in the source (no retargeting)."""

    lip_open: float | None = None  # target lip-open ratio, 0 (closed) .. 1
    eye_open: float | None = None  # target eye-open ratio for both eyes, 0 (closed) .. 1
    pitch: float = 0.0  # head rotation deltas from the source pose, degrees
    yaw: float = 0.0
    roll: float = 0.0


@dataclass(frozen=True)
class SourceState:
    """Everything ``animate`` needs from the source portrait (tensors on the model's device)."""

    feature_volume: torch.Tensor  # 1 x C x D x H x W appearance features
    kp_canonical: torch.Tensor  # 1 x K x 3
    pitch: torch.Tensor  # 1, degrees
    yaw: torch.Tensor  # 1, degrees
    roll: torch.Tensor  # 1, degrees
    exp: torch.Tensor  # 1 x K x 3 expression deformation
    scale: torch.Tensor  # 1 x 1
    t: torch.Tensor  # 1 x 3
    x_s: torch.Tensor  # 1 x K x 3 transformed source keypoints
    eye_ratio: torch.Tensor  # 1 x 2 source (left, right) eye-open ratios
    lip_ratio: torch.Tensor  # 1 x 1 source lip-open ratio


def _ratio(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")
    return min(max(float(value), 0.0), 1.0)


class LivePortraitModel:
    def __init__(
        self,
        runtime: LivePortraitRuntime,
        *,
        output_size: int = 256,
        batch_size: int = 4,
        stitching: bool = True,
    ) -> None:
        if output_size <= 0 or batch_size <= 0:
            raise ValueError("output_size and batch_size must be positive")
        self.runtime = runtime
        self.nets = runtime.networks
        self.cfg: LivePortraitConfig = self.nets.cfg
        self.device = runtime.device
        self.output_size = output_size
        self.batch_size = batch_size
        self.stitching = stitching

    @classmethod
    def from_weights(
        cls,
        root: str | Path,
        *,
        device: str = "cpu",
        fp16: bool = False,
        compile: bool = False,
        output_size: int = 256,
        batch_size: int = 4,
        stitching: bool = True,
        config: LivePortraitConfig | None = None,
    ) -> LivePortraitModel:
        runtime = load_runtime(root, device=device, fp16=fp16, compile=compile, config=config)
        return cls(runtime, output_size=output_size, batch_size=batch_size, stitching=stitching)

    def _image_tensor(self, image: np.ndarray) -> torch.Tensor:
        if (
            not isinstance(image, np.ndarray)
            or image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
        ):
            raise InvalidImageError("source must be an H x W x 3 uint8 RGB array")
        size = self.cfg.input_size
        if image.shape[:2] != (size, size):
            shrink = min(image.shape[:2]) > size
            image = cv2.resize(
                image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            )
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        return x.permute(2, 0, 1).unsqueeze(0).float() / 255.0

    @torch.inference_mode()
    def prepare_source(
        self,
        image: np.ndarray,
        *,
        eye_ratio: tuple[float, float] = (DEFAULT_SOURCE_EYE_RATIO, DEFAULT_SOURCE_EYE_RATIO),
        lip_ratio: float = DEFAULT_SOURCE_LIP_RATIO,
    ) -> SourceState:
        """Extract features and keypoints of a square RGB crop (resized to the model input if needed).

        ``eye_ratio`` / ``lip_ratio`` are the source's measured ratios when a landmark detector is at
        hand; the retargeting MLPs move the face from these towards each frame's targets.
        """
        x = self._image_tensor(image)
        with self.runtime.autocast():
            volume = self.nets.appearance_feature_extractor(x)
            heads = self.nets.motion_extractor(x)
        heads = MotionOutput(*(h.float() for h in heads))
        pitch, yaw, roll = (bins_to_degrees(h) for h in (heads.pitch, heads.yaw, heads.roll))
        kp = heads.kp.view(1, NUM_KP, 3)
        exp = heads.exp.view(1, NUM_KP, 3)
        x_s = transform_keypoints(kp, rotation_matrix(pitch, yaw, roll), exp, heads.scale, heads.t)
        eyes = [_ratio(v, "eye_ratio") for v in eye_ratio]
        return SourceState(
            feature_volume=volume.float(),
            kp_canonical=kp,
            pitch=pitch,
            yaw=yaw,
            roll=roll,
            exp=exp,
            scale=heads.scale,
            t=heads.t,
            x_s=x_s,
            eye_ratio=torch.tensor([eyes], device=self.device),
            lip_ratio=torch.tensor([[_ratio(lip_ratio, "lip_ratio")]], device=self.device),
        )

    @torch.inference_mode()
    def driving_keypoints(self, source: SourceState, controls: Sequence[FrameControls]) -> torch.Tensor:
        """N x K x 3 driving keypoints: rotated source pose + eye / lip retargeting (+ stitching)."""
        n = len(controls)
        angles = torch.tensor(
            [[c.pitch, c.yaw, c.roll] for c in controls], dtype=torch.float32, device=self.device
        )
        if not torch.isfinite(angles).all():
            raise InputError("head rotation deltas must be finite")
        rot = rotation_matrix(
            source.pitch + angles[:, 0], source.yaw + angles[:, 1], source.roll + angles[:, 2]
        )
        x_d = transform_keypoints(
            source.kp_canonical.expand(n, -1, -1),
            rot,
            source.exp.expand(n, -1, -1),
            source.scale.expand(n, -1),
            source.t.expand(n, -1),
        )
        x_s = source.x_s.expand(n, -1, -1)
        eye = [c.eye_open for c in controls]
        if any(v is not None for v in eye):
            target, mask = self._targets(eye, "eye_open")
            x_d = x_d + mask * eye_delta(self.nets.eye, x_s, source.eye_ratio.expand(n, -1), target)
        lip = [c.lip_open for c in controls]
        if any(v is not None for v in lip):
            target, mask = self._targets(lip, "lip_open")
            x_d = x_d + mask * lip_delta(self.nets.lip, x_s, source.lip_ratio.expand(n, -1), target)
        if self.stitching:
            x_d = stitch(self.nets.stitching, x_s, x_d)
        return x_d

    def _targets(self, values: list[float | None], name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """N x 1 target ratios and an N x 1 x 1 mask that zeroes the delta of frames without one."""
        target = torch.tensor([[0.0 if v is None else _ratio(v, name)] for v in values], device=self.device)
        mask = torch.tensor([0.0 if v is None else 1.0 for v in values], device=self.device)
        return target, mask.view(-1, 1, 1)

    @torch.inference_mode()
    def render(self, source: SourceState, x_d: torch.Tensor) -> np.ndarray:
        """Warp + decode one batch of driving keypoints -> N x S x S x 3 uint8 frames."""
        n = x_d.shape[0]
        with self.runtime.autocast():
            feature = self.runtime.warp(
                source.feature_volume.expand(n, -1, -1, -1, -1),
                kp_source=source.x_s.expand(n, -1, -1),
                kp_driving=x_d,
            )
            image = self.runtime.decode(feature)
        image = image.float()
        if image.shape[-1] != self.output_size or image.shape[-2] != self.output_size:
            size = (self.output_size, self.output_size)
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
        image = (image * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        return image.permute(0, 2, 3, 1).cpu().numpy()

    def animate_batch(self, source: SourceState, controls: Sequence[FrameControls]) -> np.ndarray:
        """N x S x S x 3 uint8 RGB frames, rendered ``batch_size`` frames at a time."""
        if not controls:
            return np.zeros((0, self.output_size, self.output_size, 3), np.uint8)
        chunks = [
            self.render(source, self.driving_keypoints(source, controls[i : i + self.batch_size]))
            for i in range(0, len(controls), self.batch_size)
        ]
        return np.concatenate(chunks)

    def animate(self, source: SourceState, controls: FrameControls) -> np.ndarray:
        """One S x S x 3 uint8 RGB frame."""
        return self.animate_batch(source, [controls])[0]
