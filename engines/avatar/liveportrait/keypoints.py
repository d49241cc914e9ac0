"""Implicit-keypoint math: head pose, the keypoint transform, stitching and eye / lip retargeting.

Keypoints are row vectors (B x K x 3, normalised to [-1, 1]) and rotate as ``x @ R``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import NUM_KP

BIN_DEGREES = 3.0  # width of one pose bin
BIN_OFFSET = 97.5  # degrees subtracted from the expected bin position (the 66 bins span -97.5..+97.5)


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """B x num_bins pose logits -> B angles in degrees (expected bin under the softmax)."""
    idx = torch.arange(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    return (F.softmax(logits, dim=-1) * idx).sum(-1) * BIN_DEGREES - BIN_OFFSET


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Angles in degrees (shape B) -> B x 3 x 3 R such that ``x @ R`` rotates row vectors.

    Column-vector form: roll(z) @ yaw(y) @ pitch(x); R is its transpose.
    """
    p, y, r = (torch.deg2rad(a.reshape(-1)) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)

    def mat(*rows: torch.Tensor) -> torch.Tensor:
        return torch.stack(rows, dim=-1).view(-1, 3, 3)

    rot_x = mat(one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos())
    rot_y = mat(y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos())
    rot_z = mat(r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one)
    return (rot_z @ rot_y @ rot_x).transpose(1, 2)


def transform_keypoints(
    kp_canonical: torch.Tensor,
    rotation: torch.Tensor,
    exp: torch.Tensor,
    scale: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """x = s * (x_c @ R + exp) + t, with t_z dropped (depth translation is not used).

    kp_canonical, exp: B x K x 3; rotation: B x 3 x 3; scale: B x 1; t: B x 3.
    """
    x = scale.view(-1, 1, 1) * (kp_canonical @ rotation + exp)
    shift = torch.cat([t[:, :2], torch.zeros_like(t[:, 2:])], dim=-1)
    return x + shift[:, None, :]


def _flat(kp: torch.Tensor) -> torch.Tensor:
    return kp.reshape(kp.shape[0], -1)


def lip_delta(
    lip_mlp: nn.Module, x_s: torch.Tensor, source_lip: torch.Tensor, target_lip: torch.Tensor
) -> torch.Tensor:
    """Keypoint offsets that move the source mouth (ratio ``source_lip``) to ``target_lip``.

    x_s: B x K x 3 source keypoints; source_lip, target_lip: B x 1 lip-open ratios. Returns B x K x 3.
    """
    out = lip_mlp(torch.cat([_flat(x_s), source_lip, target_lip], dim=1))
    return out.view(-1, NUM_KP, 3)


def eye_delta(
    eye_mlp: nn.Module, x_s: torch.Tensor, source_eyes: torch.Tensor, target_eye: torch.Tensor
) -> torch.Tensor:
    """Keypoint offsets that move the source eyes (B x 2: left, right ratios) to ``target_eye`` (B x 1)."""
    out = eye_mlp(torch.cat([_flat(x_s), source_eyes, target_eye], dim=1))
    return out.view(-1, NUM_KP, 3)


def stitch(stitching_mlp: nn.Module, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """Correct driving keypoints so the animated crop stays aligned with the source (shoulders, edges).

    The MLP predicts a per-keypoint offset (K * 3) and one global (tx, ty) shift.
    """
    delta = stitching_mlp(torch.cat([_flat(x_s), _flat(x_d)], dim=1))
    per_kp = delta[:, : NUM_KP * 3].view(-1, NUM_KP, 3)
    shift = F.pad(delta[:, NUM_KP * 3 : NUM_KP * 3 + 2], (0, 1))  # (tx, ty, 0)
    return x_d + per_kp + shift[:, None, :]
