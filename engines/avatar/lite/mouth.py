"""Per-frame mouth: the jaw/lip warp on the face canvas and the painted mouth interior.

Each canvas column is treated as a 1-D stretch, defined directly in *output* coordinates so no field
inversion is needed. Down a column: the upper lip rises a little (the skin under the nose compresses),
the lips part (output rows between the lips sample the lip junction and are then covered by the
interior), the lower lip and chin drop rigidly, and the drop fades out down the neck.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.avatar.lite.config import LiteConfig
from engines.avatar.lite.rig import SPREAD_REACH, MouthRig, smoothstep

_EPS = 1e-3
SPREAD_FALLOFF = 1.2  # lip spread profile r * exp((1 - r^2) / (2 s^2)): peaks just outside the corners
SPREAD_HEIGHT = 0.8  # vertical Gaussian radius of the lip spread, in half mouth widths
TONGUE_TOP = (0.62, 0.3)  # tongue surface, as a share of the gap from the upper lip: t = a + b r^2
TONGUE_SHOWS = (0.12, 0.2)  # the tongue fades in as the gap grows past a, over b (mouth widths)
TEETH_SPAN = (0.75, 0.4)  # teeth fade out from |r| = a - b to a: only the front of the arch shows
TEETH_GAPS = (-0.16, -0.08, 0.0, 0.08, 0.16)  # separations between the front teeth, mouth widths from centre
LOWER_TEETH_SHOWS = (0.14, 0.12)  # lower teeth fade in as the gap grows past a, over b (mouth widths)
LOWER_TEETH_SHADE = 0.8  # lower teeth sit in the upper lip's shadow
PUCKER_HEIGHT = 1.2  # vertical reach of the lip thickening around the mouth line, in half mouth widths
LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class MouthColumns:
    """Per block column positions (canvas y, output frame) for one frame."""

    r: np.ndarray  # position across the mouth: -1 left corner .. 1 right corner
    junction: np.ndarray  # where the lips part (source and output: it does not move)
    upper: np.ndarray  # output top of the gap (upper lip's inner edge)
    lower: np.ndarray  # output bottom of the gap (lower lip's inner edge)
    lift: np.ndarray  # upper-lip rise
    drop: np.ndarray  # lower-lip drop
    chin_drop: np.ndarray
    chin: np.ndarray  # output jaw contour
    neck_end: np.ndarray  # output row where the drop has faded out


def corner_shift(mouth_width: float, config: LiteConfig) -> float:
    """Corner displacement outwards, as a share of the half mouth width (negative: drawn in, rounded)."""
    return mouth_width * (config.lip_spread if mouth_width > 0 else config.lip_round)


def mouth_columns(rig: MouthRig, mouth_open: float, mouth_width: float, config: LiteConfig) -> MouthColumns:
    """Where the lips are in each column. The opening's shape follows the width: rounded lips leave a
    narrower, taller and rounder opening, spread lips a wide thin slit. At ``mouth_open`` 0 the lower lip
    rises over any gap the photo shows (``close_lips``), so the lips meet; the opening grows from there."""
    xs = np.arange(rig.block.x0, rig.block.x1, dtype=np.float64)
    drop_max = max(mouth_open, 0.0) * rig.jaw_drop
    half_width = rig.half_width * (1.0 + corner_shift(mouth_width, config))
    r = (xs - rig.center_x) / half_width
    inside = np.abs(r) < 1.0
    r_in = np.clip(r, -1.0, 1.0)
    junction = np.polyval(rig.junction, r_in)  # flat beyond the corners
    across = np.where(inside, 1.0 - r_in**2, 0.0)
    rounded, spread = max(-mouth_width, 0.0), max(mouth_width, 0.0)
    shape = (config.lower_lip_shape + (config.round_shape - config.lower_lip_shape) * rounded
             + (config.spread_shape - config.lower_lip_shape) * spread)
    height = 1.0 + config.round_height * rounded - config.spread_flatten * spread
    shown = np.maximum(junction - np.polyval(rig.upper_inner, r_in), 0.0) * inside  # the photo's own gap
    # Speech opens the photo's own gap back up by mouth_open = close_release, and the jaw drops on from it.
    press = config.close_lips * max(1.0 - mouth_open / config.close_release, 0.0)
    drop = drop_max * height * across**shape - press * shown
    lift = config.lip_lift * drop_max * across
    chin_drop = drop_max * rig.jaw_weight
    upper = np.maximum(junction - lift, rig.lift_top + 1.0)
    lower = junction + drop
    chin = np.maximum(rig.chin_y + chin_drop, lower + 1.0)
    return MouthColumns(r, junction, upper, lower, lift, drop, chin_drop, chin, chin + rig.neck)


def jaw_displacement(rig: MouthRig, cols: MouthColumns) -> np.ndarray:
    """Backward vertical displacement (output y - source y) on the mouth block, [rows, cols] float32."""
    y = np.arange(rig.block.y0, rig.block.y1, dtype=np.float64)[:, None]
    top = rig.lift_top
    lip = -cols.lift * smoothstep((y - top) / np.maximum(cols.upper - top, _EPS))
    gap = y - cols.junction
    jaw = cols.drop + (cols.chin_drop - cols.drop) * smoothstep((y - cols.lower) / (cols.chin - cols.lower))
    neck = cols.chin_drop * (1.0 - smoothstep((y - cols.chin) / (cols.neck_end - cols.chin)))
    # Tested from the bottom up: a lower lip risen over the photo's teeth (closed lips) is in front of them.
    field = np.select(
        [y < top, y >= cols.neck_end, y >= cols.chin, y >= cols.lower, y >= cols.upper],
        [0.0, 0.0, neck, jaw, gap],
        lip,
    )
    return field.astype(np.float32)


def spread_displacement(rig: MouthRig, mouth_width: float,
                        config: LiteConfig) -> tuple[np.ndarray, np.ndarray]:
    """Displacement (x, y) on the mouth block: corners move out (spread) or in (rounded), and the lips
    thicken vertically when rounded (pursed, pushed forward) or thin when spread.

    The horizontal profile equals r at the corners (they move by the full amount) and fades out over about
    three half-widths, reaching exactly zero at ``SPREAD_REACH``; vertically a Gaussian, tapered to zero at
    the block's top (under the nose) so the block edge leaves no seam. The thickening scales distances from
    the mouth line inside the lips and fades out above and below them.
    """
    y = np.arange(rig.block.y0, rig.block.y1, dtype=np.float64)[:, None]
    x = np.arange(rig.block.x0, rig.block.x1, dtype=np.float64)[None, :]
    r = (x - rig.center_x) / rig.half_width
    mouth_line = float(np.polyval(rig.junction, 0.0))
    v = (y - mouth_line) / (SPREAD_HEIGHT * rig.half_width)
    across = r * np.exp((1.0 - r**2) / (2 * SPREAD_FALLOFF**2))
    across *= 1.0 - smoothstep(np.abs(r) - SPREAD_REACH + 1.0)  # reaches exactly zero at SPREAD_REACH
    down = np.exp(-0.5 * v**2) * smoothstep((y - rig.lift_top) / (mouth_line - rig.lift_top))
    sideways = corner_shift(mouth_width, config) * rig.half_width * across * down
    thicken = config.round_pucker * (max(-mouth_width, 0.0) - config.spread_flatten * max(mouth_width, 0.0))
    lips = np.exp(-0.5 * (y - mouth_line) ** 2 / (PUCKER_HEIGHT * rig.half_width / 2) ** 2)
    lips = lips * np.exp(-0.5 * r**2) * smoothstep((y - rig.lift_top) / (mouth_line - rig.lift_top))
    vertical = thicken * (y - mouth_line) * lips
    return sideways.astype(np.float32), vertical.astype(np.float32)


def interior(rig: MouthRig, cols: MouthColumns, config: LiteConfig) -> tuple[np.ndarray, np.ndarray]:
    """RGB (float32, 0..255) and alpha of the mouth interior on the interior block of the canvas.

    Dark oral cavity (darkest at the back/centre), a band of upper teeth under the upper lip, and the
    tongue rising from the bottom once the mouth is open enough; edges feathered by ``feather_px``.
    """
    block = rig.interior
    sel = slice(block.x0 - rig.block.x0, block.x1 - rig.block.x0)
    r, upper, lower = cols.r[sel], cols.upper[sel], cols.lower[sel]
    y = np.arange(block.y0, block.y1, dtype=np.float64)[:, None]
    gap = np.maximum(lower - upper, _EPS)
    feather = config.feather_px
    inside = np.abs(r) < 1.0
    alpha = (np.clip((y - upper) / feather + 0.5, 0.0, 1.0) * np.clip((lower - y) / feather + 0.5, 0.0, 1.0)
             * inside)
    across = np.clip(1.0 - r**2, 0.0, 1.0)
    t = np.clip((y - upper) / gap, 0.0, 1.0)  # 0 at the upper lip .. 1 at the lower lip
    below_lip = y - upper  # px under the upper lip

    depth = np.sin(np.pi * t) * np.sqrt(across)
    color = np.asarray(config.cavity_rgb)[None, None, :] * (1.0 - 0.65 * depth)[..., None]

    tongue_top = TONGUE_TOP[0] + TONGUE_TOP[1] * r**2
    on_tongue = (t - tongue_top) / (1.0 - tongue_top)  # 0 at its back .. 1 at its tip, behind the lower lip
    tongue_alpha = (np.clip(on_tongue * gap / 4.0, 0.0, 1.0)
                    * smoothstep((gap / rig.width - TONGUE_SHOWS[0]) / TONGUE_SHOWS[1]))
    tongue_shade = (0.5 + 0.5 * np.clip(on_tongue, 0.0, 1.0)) * (0.55 + 0.45 * across)
    tongue = np.asarray(config.tongue_rgb)[None, None, :] * tongue_shade[..., None]
    color += (tongue - color) * tongue_alpha[..., None]

    # Upper teeth: the incisors under the middle of the lip, fading into shadow towards the corners,
    # with faint separations between the front four.
    teeth_height = np.minimum(config.teeth_height * rig.width * np.sqrt(across), 0.6 * gap)
    teeth_alpha = (np.clip(teeth_height - below_lip, 0.0, 1.0) * np.clip(gap / 3.0, 0.0, 1.0)
                   * smoothstep((TEETH_SPAN[0] - np.abs(r)) / TEETH_SPAN[1]) * rig.teeth)
    x = r * rig.half_width / rig.width  # across the mouth in mouth widths
    separations = sum(np.exp(-(((x - offset) / 0.012) ** 2)) for offset in TEETH_GAPS)
    shade = ((0.45 + 0.55 * across**1.5) * (0.7 + 0.3 * np.clip(below_lip / 1.5, 0.0, 1.0))
             * (1.0 - 0.25 * separations))
    teeth = np.asarray(config.teeth_rgb)[None, None, :] * shade[..., None]
    color += (teeth - color) * teeth_alpha[..., None]

    # Lower teeth: the incisors' edges just above the lower lip, once the jaw has dropped far enough.
    above_lip = lower - y  # px over the lower lip
    lower_height = config.lower_teeth_height * rig.width * np.sqrt(across)
    lower_alpha = (np.clip(lower_height - above_lip, 0.0, 1.0) * np.clip(above_lip, 0.0, 1.0)
                   * smoothstep((gap / rig.width - LOWER_TEETH_SHOWS[0]) / LOWER_TEETH_SHOWS[1])
                   * smoothstep((TEETH_SPAN[0] - np.abs(r)) / TEETH_SPAN[1]))
    lower_teeth = np.asarray(config.teeth_rgb)[None, None, :] * (LOWER_TEETH_SHADE * shade)[..., None]
    color += (lower_teeth - color) * lower_alpha[..., None]
    gray = (color @ LUMA)[..., None]
    color = gray + (color - gray) * rig.saturation
    return (color * rig.brightness).astype(np.float32), alpha.astype(np.float32)
