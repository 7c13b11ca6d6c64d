"""Skeleton features: BlazePose keypoints -> hip-centred, torso-scaled positions, visibility, velocities.

In: keypoints ``(..., T, 33, 4)`` (x, y, z, visibility; x, y in [0,1] of the frame, z at about x's scale)
and mask ``(..., T)`` (a person found). Per frame, with hip centre ``c = (p23 + p24) / 2`` (BlazePose's
left and right hips) and torso size ``s = |(p11 + p12) / 2 - c|`` in the image plane (shoulder centre to
hip centre), ``s`` floored at ``MIN_TORSO`` (:func:`normalize_keypoints`, x, y and z):

    pos  = (p_xy - c_xy) / s                             (33, 2)  the body's shape, wherever it stands
    vel  = pos_t - pos_{t-1}                              (33, 2)  0 where either frame has no person
    move = ((c_t - c_{t-1})_xy / s_t, log s_t - log s_{t-1}) (3,)  the body's own motion in the frame
    mask                                                  (1,)

concatenated to ``(..., T, FEATURES)`` with ``FEATURES = 33*4 + 4 = 136``; every feature is 0 where
``mask`` is False. BlazePose's z (a noisy depth guess) and visibility are left out: on arid6 which joints
are visible is the camera's framing - a scene cue like the one that sinks the RGB models (a linear probe on
clip statistics of the gamma poses, scored on the test clips, got 17-30% with them, 37-41% without;
BENCHMARKS.md). Hip-centring and torso scaling make the pose independent of where the person stands
and how far away (the scene), velocities carry the action's motion (the "pose + velocity" input of
skeleton action recognition, e.g. Yan et al., ST-GCN, AAAI 2018, use coordinates and motion streams).
:func:`flip_keypoints` mirrors a skeleton (x -> 1 - x, left and right joints swapped).
"""
from __future__ import annotations

import torch

__all__ = ["FEATURES", "MIN_TORSO", "FLIP_PERMUTATION", "normalize_keypoints", "pose_features", "flip_keypoints",
           "mask_of"]

JOINTS = 33
FEATURES = JOINTS * 4 + 4
MIN_TORSO = 1e-2
L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 11, 12, 23, 24
# BlazePose's 33 landmarks mirrored: nose; eyes (1-3 left, 4-6 right); ears 7/8; mouth 9/10; then left/right pairs 11-32
FLIP_PERMUTATION = [0, 4, 5, 6, 1, 2, 3, 8, 7, 10, 9] + [j + (1 if j % 2 else -1) for j in range(11, 33)]


def mask_of(keypoints: torch.Tensor) -> torch.Tensor:
    """``(..., T)`` bool: frames whose keypoints are not all zero (the pose store zeroes frames without a person)."""
    return keypoints.ne(0).flatten(-2).any(-1)


def normalize_keypoints(keypoints: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(pos (..., T, 33, 3), centre (..., T, 3), torso size (..., T))``; pos is 0 where ``mask`` is False."""
    xyz = keypoints[..., :3]
    c = (xyz[..., L_HIP, :] + xyz[..., R_HIP, :]) / 2
    sh = (xyz[..., L_SHOULDER, :] + xyz[..., R_SHOULDER, :]) / 2
    s = (sh[..., :2] - c[..., :2]).norm(dim=-1).clamp(min=MIN_TORSO)
    pos = (xyz - c.unsqueeze(-2)) / s[..., None, None]
    return pos * mask[..., None, None], c, s


def pose_features(keypoints: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(..., T, 33, 4)`` keypoints (+ ``(..., T)`` mask, default :func:`mask_of`) -> ``(..., T, FEATURES)``."""
    if mask is None:
        mask = mask_of(keypoints)
    m = mask.to(keypoints.dtype)
    pos, c, s = normalize_keypoints(keypoints, m)
    pos = pos[..., :2]
    both = m.clone()
    both[..., 1:] = m[..., 1:] * m[..., :-1]
    both[..., 0] = 0
    vel = torch.zeros_like(pos)
    vel[..., 1:, :, :] = (pos[..., 1:, :, :] - pos[..., :-1, :, :]) * both[..., 1:, None, None]
    move = torch.zeros(*c.shape[:-1], 3, dtype=keypoints.dtype, device=keypoints.device)
    move[..., 1:, :2] = (c[..., 1:, :2] - c[..., :-1, :2]) / s[..., 1:, None]
    move[..., 1:, 2] = s[..., 1:].log() - s[..., :-1].log()
    move = move * both[..., None]
    return torch.cat([pos.flatten(-2), vel.flatten(-2), move, m[..., None]], dim=-1)


def flip_keypoints(keypoints: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The mirrored skeleton: x -> 1 - x and left/right joints swapped; frames without a person stay 0."""
    if mask is None:
        mask = mask_of(keypoints)
    out = keypoints[..., FLIP_PERMUTATION, :].clone()
    out[..., 0] = 1 - out[..., 0]
    return out * mask[..., None, None].to(out.dtype)
