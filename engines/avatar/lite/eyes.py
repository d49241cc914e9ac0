"""Per-frame eyelids: a lid made of the person's own skin slides down over the eye.

Drawn as an overlay on the face canvas, from a little above the upper lid margin (hiding the open
eye's lash line) down to the moving lid edge. Its colour is the skin just above the overlay, column by
column, so the top edge is seamless; it darkens towards a soft lash line at the moving edge, which
travels to (slightly past) the lower lid when the eye is closed.
"""

from __future__ import annotations

import cv2
import numpy as np

from engines.avatar.lite.config import LiteConfig
from engines.avatar.lite.rig import EyeRig, smoothstep

_EPS = 1e-3


def lid_overlay(rig: EyeRig, blink: float, config: LiteConfig) -> tuple[np.ndarray, np.ndarray]:
    """RGB (float32, 0..255) and alpha of the upper lid on the eye block."""
    closure = float(np.clip(blink, 0.0, 1.0)) * (1.0 + config.lid_overshoot)
    opening = (rig.lower - rig.upper) * (rig.across > 0)
    edge = rig.upper + closure * opening  # output lid margin per column
    reach = config.lid_reach * rig.opening * min(1.0, closure / 0.3)
    top = rig.upper - reach
    rows, cols = rig.block.shape
    y = np.arange(rig.block.y0, rig.block.y1, dtype=np.float64)[:, None]
    alpha = (smoothstep((y - top) / max(0.5 * reach, 0.5)) * np.clip(edge - y + 0.5, 0.0, 1.0)
             * smoothstep(rig.across / 0.15))

    # Lid colour per column: the skin just above the overlay (so the top edge is seamless), smoothed
    # sideways; shaded towards the edge and lit slightly where the eyeball bulges.
    xs = np.arange(cols, dtype=np.float32)[None, :]
    above = (top - 1.5 - rig.skin_top).astype(np.float32)[None, :]
    row = cv2.remap(rig.skin, xs, above, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    row = cv2.blur(row, (config.lid_smooth, 1), borderType=cv2.BORDER_REPLICATE)
    # Keep the local brightness but take the hue of the cheeks: the samples above a lid are often eye
    # shadow or brow hair, while a closed lid reads as skin.
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    as_skin = rig.skin_rgb * ((row @ luma) / max(float(rig.skin_rgb @ luma), 1.0))[..., None]
    row += (as_skin - row) * config.lid_warmth
    # Skin grain: the fine detail of the skin above, mirrored about the overlay's top edge.
    mirrored = (top - np.abs(y - top) - rig.skin_top).astype(np.float32)
    grain = cv2.remap(rig.skin_detail, np.broadcast_to(xs, (rows, cols)), mirrored, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE)
    color = np.repeat(row, rows, axis=0) + grain
    color *= (1.0 + config.lid_highlight * rig.across)[None, :, None].astype(np.float32)
    depth = smoothstep((y - top) / np.maximum(edge - top, _EPS))
    color *= (1.0 - config.lid_shade * depth)[..., None].astype(np.float32)

    lash_width = max(config.lash_width * rig.width, 0.8)
    lash = np.clip(1.0 - np.abs(y - (edge - 0.5 * lash_width)) / lash_width, 0.0, 1.0)
    lash *= np.sqrt(rig.across) * min(1.0, closure / 0.15)
    color += (rig.lash_rgb[None, None, :] - color) * lash[..., None].astype(np.float32)
    return color, np.maximum(alpha, lash * (y < edge + 0.5)).astype(np.float32)
