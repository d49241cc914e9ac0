"""Per-portrait precomputation for the lite renderer: face geometry, pose warp bases, work regions.

Two coordinate frames are used:

- *image*: output/crop pixels.
- *canvas*: pixels of a small face-aligned grid (rotated so the eyes are level, origin near the face's
  top-left). Mouth, jaw and eyelid deformations are built on the canvas, where "down" is the face's own
  down even when the head is tilted in the photo, then mapped into the image through the pose warp.

Every warp is *backward*: a map gives, for each output pixel, where to sample the portrait.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engines.avatar import faces as lm
from engines.avatar.lite.config import LiteConfig
from engines.avatar.portrait import Portrait

SPREAD_REACH = 3.5  # half mouth widths from the centre where the lip-spread warp has faded to zero
# Head model, in face widths from the eye line's middle (face-aligned): where the head warp applies
# (an ellipse covering hair to chin, feathered) and how far the face surface stands in front of the
# rotation axes (a paraboloid plus the nose).
HEAD_ELLIPSE = (0.62, 0.95, 0.1)  # half width, half height, centre below the eyes
HEAD_FEATHER = (0.85, 0.3)  # the mask starts fading at this ellipse radius, over this much
FACE_DEPTH = (0.5, 0.55, 0.8, 0.2)  # depth radius, surface half width, half height, centre below the eyes
NOSE_DEPTH = (0.2, 0.1)  # extra depth at the nose tip, its radius
NECK_PIVOT = 0.5  # roll pivot below the chin, in face heights
# Mouth-corner expressions: (share of the photo's own smile taken away, corners lowered by this share of
# the mouth width, drawn in by this share of the half mouth width); negative values do the opposite.
EXPRESSIONS = {
    "portrait": (0.0, 0.0, 0.0),
    "neutral": (1.0, 0.0, 0.05),
    "serious": (1.0, 0.025, 0.08),
    "smile": (0.0, -0.03, -0.04),
}
CORNER_REACH = (0.3, 0.3)  # Gaussian radii (x, y) of the corner shift, in half mouth widths
LIP_OVERLAP_PX = 1.5  # closed lips overlap by this much (the landmark sits on the edge, teeth just below)


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class Block:
    """A rectangular sub-region: rows ``y0:y1``, columns ``x0:x1``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def _block(y0: float, y1: float, x0: float, x1: float) -> Block:
    """The integer block covering the given float bounds (inclusive)."""
    return Block(int(np.floor(y0)), int(np.ceil(y1)) + 1, int(np.floor(x0)), int(np.ceil(x1)) + 1)


def _clip_block(y0: float, y1: float, x0: float, x1: float, height: int, width: int) -> Block:
    block = _block(y0, y1, x0, x1)
    return Block(max(0, block.y0), min(height, block.y1), max(0, block.x0), min(width, block.x1))


@dataclass(frozen=True)
class MouthRig:
    """Mouth and jaw geometry on the canvas (x along the mouth, y down the face)."""

    block: Block  # canvas rows/columns the jaw deformation may touch
    interior: Block  # canvas region where the mouth interior can appear
    interior_out: Block  # image region where the interior is composited
    center_x: float
    half_width: float  # inner-lip corner to centre
    width: float  # outer mouth width
    junction: np.ndarray  # poly coefficients y(r): where the lips part, r in [-1, 1] corner to corner
    upper_inner: np.ndarray  # poly coefficients y(r): the upper lip's inner edge (above any teeth shown)
    gap_px: float  # how far apart the photo's lips are in the middle (0: closed lips)
    jaw_drop: float  # chin drop in px at mouth_open = 1
    lift_top: float  # canvas y above which the upper lip region does not move
    chin_y: np.ndarray  # per block column: jaw contour y
    jaw_weight: np.ndarray  # per block column: share of the chin drop (1 at the chin, 0 at the face edge)
    neck: float  # length over which the chin drop fades out below the jaw
    teeth: float  # 0..1: how much painted upper teeth to show (0 when the photo already shows teeth)
    brightness: float  # interior colour scale matched to the portrait's skin
    saturation: float  # interior colourfulness matched to the skin's (0 for a black-and-white photo)
    expression: np.ndarray | None  # [rows, cols, 2] corner displacement (x, y) on the block, None: none
    purse: np.ndarray | None  # [rows, cols, 2] what rounding the lips (mouth_width = -1) takes off the smile


@dataclass(frozen=True)
class EyeRig:
    """One eye's lid geometry and colours on the canvas."""

    block: Block  # canvas region of the eye opening (plus the lid overshoot)
    out: Block  # image region where the lid overlay is composited
    across: np.ndarray  # per block column: 1 - r^2 between the eye corners, 0 outside
    upper: np.ndarray  # per block column: upper lid margin y
    lower: np.ndarray  # per block column: lower lid margin y
    width: float  # corner to corner
    opening: float  # lid-to-lid height at the middle
    skin: np.ndarray  # float32 RGB of the canvas from ``skin_top`` down to the block bottom, block columns
    skin_detail: np.ndarray  # ``skin`` minus its blur: grain to texture the lid
    skin_top: int  # canvas row of ``skin[0]``
    lash_rgb: np.ndarray  # lash colour, sampled along the upper lid margin
    skin_rgb: np.ndarray  # cheek colour: warms the lid, whose own samples can be eye shadow


@dataclass(frozen=True)
class FaceRig:
    size: int
    image: np.ndarray
    grid: np.ndarray  # [H*W*2] identity map (x, y interleaved)
    pose_bases: np.ndarray  # [4, H*W*2]: backward displacement per radian of yaw/pitch/roll, per unit breath
    jaw_out: Block  # image region where the jaw/lip warp can land
    to_canvas: np.ndarray  # 2x3 affine: image -> canvas coordinates
    to_image_rotation: np.ndarray  # 2x3 linear: canvas displacement -> image displacement
    mouth: MouthRig
    eyes: tuple[EyeRig, ...]


def _lid_curve(corners: np.ndarray, points: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Lid margin y at ``xs``: the corner-to-corner line plus (1 - r^2)(a + b r) through the lid points."""
    (xa, ya), (xb, yb) = corners
    center, half = (xa + xb) / 2, max(abs(xb - xa) / 2, 1e-3)

    def line(x: np.ndarray) -> np.ndarray:
        return ya + (yb - ya) * (x - xa) / (xb - xa)

    r = (points[:, 0] - center) / half
    design = np.stack([(1 - r**2), (1 - r**2) * r], axis=1)
    coef, *_ = np.linalg.lstsq(design, points[:, 1] - line(points[:, 0]), rcond=None)
    rs = np.clip((xs - center) / half, -1.0, 1.0)
    return line(xs) + (1 - rs**2) * (coef[0] + coef[1] * rs)


def _cheek_rgb(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Median colour of the cheeks (between the eyes' outer corners and the mouth corners)."""
    radius = max(2, round(0.04 * image.shape[0]))
    patches = []
    for eye, mouth in ((36, 48), (45, 54)):
        x, y = np.round((landmarks[eye] + landmarks[mouth]) / 2).astype(int)
        patches.append(image[max(0, y - radius) : y + radius, max(0, x - radius) : x + radius].reshape(-1, 3))
    return np.median(np.concatenate(patches), axis=0).astype(np.float32)


class _CanvasMap:
    """Image <-> canvas conversions for one portrait."""

    def __init__(self, pivot: np.ndarray, unrotate: np.ndarray, origin: np.ndarray, size: int, margin: float):
        self.pivot, self.unrotate, self.origin, self.size, self.margin = pivot, unrotate, origin, size, margin

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        return (xy + self.origin - self.pivot) @ self.unrotate + self.pivot

    def footprint(self, block: Block) -> Block:
        """Image region a canvas block can land on, with room for the largest pose displacement."""
        corners = self.to_image(np.array([[block.x0, block.y0], [block.x1, block.y0], [block.x0, block.y1],
                                          [block.x1, block.y1]], np.float64))
        pad = self.margin
        return _clip_block(corners[:, 1].min() - pad, corners[:, 1].max() + pad,
                           corners[:, 0].min() - pad, corners[:, 0].max() + pad, self.size, self.size)


def build_rig(portrait: Portrait, config: LiteConfig) -> FaceRig:
    size = portrait.size
    points = portrait.landmarks.astype(np.float64)
    right_eye, left_eye = points[lm.RIGHT_EYE].mean(axis=0), points[lm.LEFT_EYE].mean(axis=0)
    angle = float(np.arctan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))
    pivot = (right_eye + left_eye) / 2
    cos, sin = np.cos(angle), np.sin(angle)
    unrotate = np.array([[cos, sin], [-sin, cos]])  # image -> face-aligned (eyes level)
    aligned = (points - pivot) @ unrotate.T + pivot

    # Floors keep odd landmark fits (a profile view, a squashed face) from producing degenerate sizes.
    face_width = max(float(aligned[16, 0] - aligned[0, 0]), 0.2 * size)
    face_height = max(float(aligned[8, 1] - aligned[lm.NOSE_BRIDGE_TOP, 1]), 0.5 * face_width)
    # Canvas origin: half a face width up and left of the landmarks, so every block has x, y >= 0.
    origin = np.floor(aligned.min(axis=0) - 0.5 * face_width)
    on_canvas = aligned - origin
    canvas_map = _CanvasMap(pivot, unrotate, origin, size, config.pose_margin * size)
    to_canvas = np.zeros((2, 3))
    to_canvas[:, :2] = unrotate
    to_canvas[:, 2] = pivot - unrotate @ pivot - origin
    to_image_rotation = np.zeros((2, 3))
    to_image_rotation[:, :2] = unrotate.T
    extent = np.ceil(on_canvas.max(axis=0)).astype(int) + 2
    canvas_image = cv2.warpAffine(portrait.image, to_canvas, (int(extent[0]), int(extent[1])),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    cheek = _cheek_rgb(portrait.image, portrait.landmarks)
    mouth = _mouth_rig(portrait, on_canvas, canvas_map, cheek, face_width, face_height, config)
    eyes = tuple(_eye_rig(on_canvas, canvas_image, eye, brow, canvas_map, cheek, config)
                 for eye, brow in ((lm.RIGHT_EYE, lm.RIGHT_BROW), (lm.LEFT_EYE, lm.LEFT_BROW)))

    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    grid = np.stack([xs, ys], axis=-1).reshape(-1)
    bases = _pose_bases(xs, ys, aligned, pivot, unrotate, face_width, face_height, size, config)
    return FaceRig(
        size=size, image=portrait.image, grid=grid, pose_bases=bases,
        jaw_out=canvas_map.footprint(mouth.block), to_canvas=to_canvas.astype(np.float32),
        to_image_rotation=to_image_rotation.astype(np.float32),
        mouth=mouth, eyes=eyes,
    )


def _mouth_rig(
    portrait: Portrait, pts: np.ndarray, canvas_map: _CanvasMap, cheek: np.ndarray, face_width: float,
    face_height: float, config: LiteConfig,
) -> MouthRig:
    mouth_width = float(pts[lm.MOUTH_RIGHT, 0] - pts[lm.MOUTH_LEFT, 0])
    jaw_drop = config.jaw_open * face_width  # not the mouth width, which a smile in the photo inflates
    neck = config.neck_fade * face_height
    jaw_half = max(float(pts[14, 0] - pts[2, 0]) / 2, 0.25 * face_width)
    corner_l, corner_r = pts[lm.INNER_UPPER[0]], pts[lm.INNER_UPPER[-1]]
    center_x = float(corner_l[0] + corner_r[0]) / 2
    half_width = max(float(corner_r[0] - corner_l[0]) / 2, 0.3 * mouth_width)
    lower = pts[list(lm.INNER_LOWER)]
    upper = pts[list(lm.INNER_UPPER)]
    # The lips part along the lower lip's inner edge: teeth already showing stay with the upper jaw.
    r = (lower[:, 0] - center_x) / half_width
    junction = np.polyfit(r, lower[:, 1] - 0.5, 2)
    upper_inner = np.polyfit((upper[:, 0] - center_x) / half_width, upper[:, 1] + LIP_OVERLAP_PX, 2)
    shown_gap = float(np.mean(lower[1:4, 1] - upper[1:4, 1]))
    teeth = float(np.clip(1.0 - shown_gap / (config.teeth_height * mouth_width), 0.0, 1.0))

    lift_top = float(pts[lm.NOSE_BASE, 1])
    spread_reach = SPREAD_REACH * half_width
    block = _block(lift_top, float(pts[lm.JAW, 1].max()) + jaw_drop + neck,
                   min(pts[8, 0] - jaw_half, center_x - spread_reach),
                   max(pts[8, 0] + jaw_half, center_x + spread_reach))
    xs = np.arange(block.x0, block.x1, dtype=np.float64)
    jaw = pts[2:15][np.argsort(pts[2:15, 0], kind="stable")]  # np.interp needs increasing x
    chin_y = np.interp(xs, jaw[:, 0], jaw[:, 1])
    jaw_weight = np.cos(0.5 * np.pi * np.clip(np.abs(xs - pts[8, 0]) / jaw_half, 0.0, 1.0)) ** 2

    reach = half_width * (1 + config.lip_spread) + 2
    ys_j = np.polyval(junction, np.linspace(-1, 1, 9))
    interior = _block(ys_j.min() - config.lip_lift * jaw_drop - 2, ys_j.max() + jaw_drop + 2,
                      center_x - reach, center_x + reach)
    brightness = float(np.clip(np.dot(cheek, (0.299, 0.587, 0.114)) / 165.0, 0.45, 1.15))
    saturation = float(np.clip((cheek.max() - cheek.min()) / max(float(cheek.max()), 1.0) / 0.2, 0.0, 1.0))
    return MouthRig(
        block=block, interior=interior, interior_out=canvas_map.footprint(interior), center_x=center_x,
        half_width=half_width, width=mouth_width, junction=junction, upper_inner=upper_inner,
        gap_px=max(float(np.polyval(junction, 0.0) - np.polyval(upper_inner, 0.0)), 0.0),
        jaw_drop=jaw_drop, lift_top=lift_top, chin_y=chin_y, jaw_weight=jaw_weight, neck=neck, teeth=teeth,
        brightness=brightness, saturation=saturation,
        expression=_corner_field(pts, block, center_x, half_width, mouth_width, lift_top,
                                 EXPRESSIONS[config.expression]),
        purse=_corner_field(pts, block, center_x, half_width, mouth_width, lift_top,
                            (1.0 - EXPRESSIONS[config.expression][0], 0.0, 0.0)),
    )


def _corner_field(pts: np.ndarray, block: Block, center_x: float, half_width: float, mouth_width: float,
                  lift_top: float, expression: tuple[float, float, float]) -> np.ndarray | None:
    """The forward displacement that moves the mouth corners as ``expression`` (an ``EXPRESSIONS``
    value) says; None when it moves nothing.

    The photo's smile is how far its outer corners sit above the middle of the lips; "neutral" takes it
    away (so a smiling portrait can speak without looking like it laughs), "serious" goes a little further.
    """
    unsmile, lower, draw_in = expression
    corners = pts[[lm.MOUTH_LEFT, lm.MOUTH_RIGHT]]
    smile = max(float((pts[51, 1] + pts[57, 1]) / 2 - corners[:, 1].mean()), 0.0)
    down = unsmile * smile + lower * mouth_width
    if abs(down) < 0.05 and abs(draw_in) < 1e-3:
        return None
    y = np.arange(block.y0, block.y1, dtype=np.float64)[:, None]
    x = np.arange(block.x0, block.x1, dtype=np.float64)[None, :]
    field = np.zeros((*block.shape, 2))
    reach_x, reach_y = CORNER_REACH[0] * half_width, CORNER_REACH[1] * half_width
    for cx, cy in corners:
        weight = np.exp(-0.5 * (((x - cx) / reach_x) ** 2 + ((y - cy) / reach_y) ** 2))
        field[..., 0] += np.sign(center_x - cx) * draw_in * half_width * weight
        field[..., 1] += down * weight
    corner_line = float(corners[:, 1].mean())
    field *= smoothstep((y - lift_top) / max(corner_line - lift_top, 1.0))[..., None]  # no seam by the nose
    return field.astype(np.float32)


def _eye_rig(
    pts: np.ndarray, canvas_image: np.ndarray, eye: slice, brow: slice, canvas_map: _CanvasMap,
    cheek: np.ndarray, config: LiteConfig,
) -> EyeRig:
    contour = pts[eye]  # corners at 0 and 3, upper lid 1-2, lower lid 4-5
    corners = contour[[0, 3]]
    if corners[0, 0] > corners[1, 0]:
        corners = corners[::-1]
    width = float(corners[1, 0] - corners[0, 0])
    opening = float(contour[[4, 5], 1].mean() - contour[[1, 2], 1].mean())
    block = _block(contour[:, 1].min() - config.lid_reach * opening - 2,
                   contour[:, 1].max() + config.lid_overshoot * opening + 2,
                   corners[0, 0] - 1, corners[1, 0] + 1)
    xs = np.arange(block.x0, block.x1, dtype=np.float64)
    upper = _lid_curve(corners, contour[1:3], xs)
    lower = np.maximum(_lid_curve(corners, contour[4:6], xs), upper)
    r = (xs - (corners[0, 0] + corners[1, 0]) / 2) / max(width / 2, 1e-3)
    across = np.clip(1.0 - r**2, 0.0, 1.0)

    # Lid texture comes from the skin above the eye; lashes are the darkest fifth along the lid margin.
    skin_top = max(0, block.y0 - round(opening) - 2)
    skin = canvas_image[skin_top : block.y1, block.x0 : block.x1].astype(np.float32)
    margin_y = round(float(contour[1:3, 1].mean()))
    x0, x1 = round(corners[0, 0] + 0.2 * width), round(corners[1, 0] - 0.2 * width) + 1
    strip = canvas_image[max(margin_y - 1, 0) : margin_y + 2, max(x0, 0) : max(x1, x0 + 1)].reshape(-1, 3)
    darkest = strip[np.argsort(strip.astype(np.float32).sum(axis=1))[: max(1, len(strip) // 5)]]
    return EyeRig(block=block, out=canvas_map.footprint(block), across=across, upper=upper, lower=lower,
                  width=width, opening=opening, skin=skin, skin_top=skin_top,
                  skin_detail=skin - cv2.GaussianBlur(skin, (0, 0), config.lid_grain_sigma),
                  lash_rgb=darkest.mean(axis=0).astype(np.float32), skin_rgb=cheek)


def _pose_bases(
    xs: np.ndarray, ys: np.ndarray, aligned: np.ndarray, pivot: np.ndarray, unrotate: np.ndarray,
    face_width: float, face_height: float, size: int, config: LiteConfig,
) -> np.ndarray:
    """Backward displacement fields for unit yaw/pitch/roll (radians) and unit breath, flattened."""
    ax = unrotate[0, 0] * (xs - pivot[0]) + unrotate[0, 1] * (ys - pivot[1]) + pivot[0]
    ay = unrotate[1, 0] * (xs - pivot[0]) + unrotate[1, 1] * (ys - pivot[1]) + pivot[1]
    eye_y = float(aligned[36:48, 1].mean())
    center_x = float(aligned[lm.NOSE_BRIDGE_TOP, 0])

    # Head: a feathered ellipse from the hair to just under the chin; the body and background stay put.
    u, v = (ax - center_x) / face_width, (ay - eye_y) / face_width  # face-aligned, in face widths
    half_width, half_height, below = HEAD_ELLIPSE
    rho = np.hypot(u / half_width, (v - below) / half_height)
    head = 1.0 - smoothstep((rho - HEAD_FEATHER[0]) / HEAD_FEATHER[1])
    # Depth of the face surface in front of the rotation axes, so yaw/pitch shift the nose more than the
    # cheeks and leave the silhouette nearly still: a cheap look of 3D rotation.
    radius, half_width, half_height, below = FACE_DEPTH
    depth_radius = radius * face_width
    depth = depth_radius * np.clip(1.0 - (u / half_width) ** 2 - ((v - below) / half_height) ** 2, 0.0, 1.0)
    nose = (aligned[lm.NOSE_TIP] - (center_x, eye_y)) / face_width
    bump, nose_radius = NOSE_DEPTH
    depth += bump * face_width * np.exp(-((u - nose[0]) ** 2 + (v - nose[1]) ** 2) / (2 * nose_radius**2))

    def rotate_back(dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return unrotate[0, 0] * dx + unrotate[1, 0] * dy, unrotate[0, 1] * dx + unrotate[1, 1] * dy

    yaw = rotate_back(depth + config.yaw_shift * depth_radius * head, np.zeros_like(depth))
    pitch = rotate_back(np.zeros_like(depth), depth + config.pitch_shift * depth_radius * head)
    # Roll about the neck, below the chin; positive = clockwise on screen.
    neck_pivot = np.array([aligned[8, 0], aligned[8, 1] + NECK_PIVOT * face_height])
    neck_image = (neck_pivot - pivot) @ unrotate + pivot
    roll = (-(ys - neck_image[1]) * head, (xs - neck_image[0]) * head)
    # Breathing lifts the torso (and the head riding on it) by a pixel or so.
    torso = smoothstep((ay - aligned[8, 1] - 0.1 * face_height) / (0.6 * face_height))
    torso *= 1.0 - smoothstep((np.abs(ax - center_x) - 1.2 * face_width) / (0.5 * face_width))
    lift = config.breath_lift * size * np.maximum(torso, 0.6 * head)
    breath = rotate_back(np.zeros_like(lift), -lift)

    forward = np.stack([np.stack(field, axis=-1) for field in (yaw, pitch, roll, breath)])
    return (-forward).reshape(4, -1).astype(np.float32)  # small, smooth fields: backward ~ -forward
