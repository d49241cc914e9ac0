"""Tunable look of the lite renderer; every field can be set from the engine's config options."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LiteConfig:
    # Mouth and jaw
    jaw_open: float = 0.15  # chin drop at mouth_open = 1, as a share of the face (jaw) width
    lip_lift: float = 0.12  # upper-lip rise, as a share of the chin drop
    lip_spread: float = 0.18  # corner shift at |mouth_width| = 1, as a share of the half mouth width
    open_narrowing: float = 0.6  # mouth_width taken off per unit of mouth_open (corners draw in)
    lip_round: float = 0.4  # corner shift inwards at mouth_width = -1, as a share of the half mouth width
    lower_lip_shape: float = 0.6  # exponent of the lower lip's drop across the mouth (lower = squarer)
    round_shape: float = 0.3  # ... at mouth_width = -1: a rounder, more circular opening
    spread_shape: float = 1.0  # ... at mouth_width = 1: a slit, pointed towards the corners
    round_height: float = 0.35  # the lips' opening is this much taller at mouth_width = -1 (pursed) ...
    spread_flatten: float = 0.3  # ... and this much lower at mouth_width = 1 (spread lips are thin)
    round_pucker: float = 0.35  # lips thicken vertically by this share at mouth_width = -1 (protruded)
    close_lips: float = 1.0  # at mouth_open = 0 the lower lip rises this share of the gap the photo shows
    close_release: float = 0.3  # ... and is back where the photo has it at this mouth_open
    lower_teeth_height: float = 0.05  # painted lower teeth on a wide-open mouth, share of the mouth width
    expression: str = "portrait"  # mouth corners: portrait (as photographed), neutral, serious, smile
    neck_fade: float = 0.45  # the chin drop fades out over this share of the face height below the jaw
    teeth_height: float = 0.09  # painted upper teeth, as a share of the mouth width
    feather_px: float = 0.9  # softness of the mouth-interior edge
    cavity_rgb: tuple[float, float, float] = (82.0, 30.0, 26.0)
    teeth_rgb: tuple[float, float, float] = (196.0, 188.0, 176.0)
    tongue_rgb: tuple[float, float, float] = (128.0, 56.0, 52.0)
    # Eyes
    lid_reach: float = 0.8  # a closing lid also covers this share of the eye opening above the lid margin
    lid_smooth: int = 5  # px: sideways smoothing of the lid colour
    lid_grain_sigma: float = 0.7  # px: skin detail finer than this is copied onto the lid
    lid_warmth: float = 0.7  # how far the lid's hue is pulled to the cheeks' (brightness stays local)
    lid_highlight: float = 0.02  # brightening of the lid's middle, where the eyeball bulges
    lid_overshoot: float = 0.15  # a closed lid reaches this share of the eye opening past the lower lid
    lid_shade: float = 0.25  # the lid darkens by this share towards its edge
    lash_width: float = 0.07  # closed-lid lash line thickness, as a share of the eye width
    # Head and body
    yaw_shift: float = 0.15  # whole-head shift per radian of yaw, as a share of the head depth radius
    pitch_shift: float = 0.2  # likewise for pitch
    breath_lift: float = 0.004  # chest/head rise at breath = 1, as a share of the frame size
    pose_margin: float = 0.06  # room for pose displacement around the face region, share of the frame
    # Runtime
    cache_size: int = 8  # prepared rigs kept per renderer (by portrait key)

    def __post_init__(self) -> None:
        from engines.avatar.lite.rig import EXPRESSIONS

        if self.expression not in EXPRESSIONS:
            raise ValueError(f"unknown expression {self.expression!r}; known: {', '.join(EXPRESSIONS)}")
