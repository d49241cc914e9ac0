"""The CPU "lite" renderer: animates a prepared portrait with one warp per frame plus small overlays.

Per frame: combine four precomputed pose fields (yaw, pitch, roll, breath) into a backward map; build
the jaw/lip displacement on the small face-aligned canvas and compose it into the map around the mouth
(one remap of the field); remap the portrait once; then alpha-composite the painted mouth interior and
eyelids, looked up through the pose map so they move with the head. About a millisecond per frame at
256 px.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

import cv2
import numpy as np

from engines.avatar.lite.config import LiteConfig
from engines.avatar.lite.eyes import lid_overlay
from engines.avatar.lite.mouth import interior, jaw_displacement, mouth_columns, spread_displacement
from engines.avatar.lite.rig import Block, FaceRig, build_rig
from engines.avatar.portrait import Portrait
from engines.motion.track import MotionTrack

_MIN_VISIBLE = 1e-3
_MIN_GAP_PX = 0.5  # a photo's lips this close already meet


class LiteRenderer:
    """``render(portrait, motion) -> [N, size, size, 3] uint8 RGB``; options are ``LiteConfig`` fields."""

    def __init__(self, config: LiteConfig | None = None, **options: object) -> None:
        self.config = dataclasses.replace(config or LiteConfig(), **options)
        self._rigs: OrderedDict[str, FaceRig] = OrderedDict()
        self._lock = threading.Lock()

    def rig(self, portrait: Portrait) -> FaceRig:
        """The portrait's precomputed rig, built on first use and kept in a small LRU by content key."""
        with self._lock:
            rig = self._rigs.get(portrait.key)
            if rig is not None:
                self._rigs.move_to_end(portrait.key)
                return rig
        rig = build_rig(portrait, self.config)
        with self._lock:
            self._rigs[portrait.key] = rig
            while len(self._rigs) > self.config.cache_size:
                self._rigs.popitem(last=False)
        return rig

    def render(self, portrait: Portrait, motion: MotionTrack) -> np.ndarray:
        rig = self.rig(portrait)
        frames = np.empty((len(motion), rig.size, rig.size, 3), np.uint8)
        for index, row in enumerate(motion.as_array()):
            frames[index] = self._frame(rig, *(float(value) for value in row))
        return frames

    def _frame(
        self, rig: FaceRig, mouth_open: float, mouth_width: float, blink: float,
        yaw: float, pitch: float, roll: float, breath: float,
    ) -> np.ndarray:
        config = self.config
        maps = rig.grid
        # scaleAdd rather than a BLAS matmul: BLAS threads spin and stall on a busy 2-core machine.
        amounts = (np.radians(yaw), np.radians(pitch), np.radians(roll), breath)
        for basis, amount in zip(rig.pose_bases, amounts, strict=True):
            maps = cv2.scaleAdd(basis, float(amount), maps)
        maps = maps.reshape(rig.size, rig.size, 2)

        # Overlays are drawn in face coordinates after the pose (not the jaw) warp: look them up first.
        overlays = []
        if blink > _MIN_VISIBLE:
            for eye in rig.eyes:
                overlays.append((eye.out, eye.block, *lid_overlay(eye, blink, config)))
        mouth = rig.mouth
        # An opening jaw draws the corners in a little, whatever the vowel.
        mouth_width = float(np.clip(mouth_width - config.open_narrowing * max(mouth_open, 0.0), -1.0, 1.0))
        columns = mouth_columns(mouth, mouth_open, mouth_width, config)
        corners = mouth.expression
        if mouth.purse is not None and mouth_width < 0.0:  # pursed lips lose the photo's smile
            corners = mouth.purse * -mouth_width + (0.0 if corners is None else corners)
        if mouth_open > _MIN_VISIBLE:
            overlays.append((mouth.interior_out, mouth.interior, *interior(mouth, columns, config)))
        lookups = [self._canvas_coords(rig, maps, out, block) for out, block, *_ in overlays]
        if mouth_open > _MIN_VISIBLE and corners is not None:
            # The interior moves with the corners (it is painted where the lips part before they move).
            where = lookups[-1]
            offset = np.array([mouth.interior.x0 - mouth.block.x0, mouth.interior.y0 - mouth.block.y0],
                              np.float32)
            where -= cv2.remap(corners, where + offset, None, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)

        closing = mouth.gap_px * config.close_lips > _MIN_GAP_PX  # closed lips differ from the photo's
        if mouth_open > _MIN_VISIBLE or abs(mouth_width) > _MIN_VISIBLE or closing or corners is not None:
            # sample = pose(p) - R * jaw_field(canvas coords of pose(p))
            across, thicken = spread_displacement(mouth, mouth_width, config)
            field = np.stack([across, jaw_displacement(mouth, columns) + thicken], axis=-1)
            if corners is not None:
                field += corners
            region = maps[rig.jaw_out.slices]
            where = self._canvas_coords(rig, maps, rig.jaw_out, mouth.block)
            field = cv2.remap(field, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            region -= cv2.transform(field, rig.to_image_rotation)
        frame = cv2.remap(rig.image, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

        for (out, _, color, alpha), where in zip(overlays, lookups, strict=True):
            color = cv2.remap(color, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            alpha = cv2.remap(alpha, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            target = frame[out.slices]
            blended = target.astype(np.float32)
            blended += (color - blended) * alpha[..., None]
            target[:] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return frame

    @staticmethod
    def _canvas_coords(rig: FaceRig, maps: np.ndarray, out: Block, block: Block) -> np.ndarray:
        """For each pixel of image region ``out``: its face-canvas position relative to ``block``."""
        where = cv2.transform(maps[out.slices], rig.to_canvas)
        where -= np.array([block.x0, block.y0], np.float32)
        return where
