"""The skeleton network: keypoints ``(B,T,33,4)`` (or ``(B,V,T,33,4)``: V windows, logits averaged)
-> :func:`dlkdd.pose.features.pose_features` ``(B,T,236)`` -> small temporal network -> logits ``(B,C)``.

- ``tcn``: a 1x1 embedding, then residual blocks of (3-tap temporal conv, dilation 1, 2, 4 -> batch
  norm -> ReLU -> dropout) (a temporal convolutional network, Bai, Kolter & Koltun 2018, "An Empirical
  Evaluation of Generic Convolutional and Recurrent Networks for Sequence Modeling").
- ``gru``: a bidirectional GRU over the frames (Cho et al. 2014).

The input is batch-normalised per feature (the "data BN" of ST-GCN, Yan et al. 2018). In training the
skeletons get a random rotation (|angle| <= 15 degrees) and anisotropic scale (0.85-1.15 per axis) about the
frame centre, one per window (:func:`random_similarity`): other camera angles than the few scenes of a
small training set. Then masked mean and max pooling over the frames with a person (``mask``; a window without any person
pools to zeros) -> dropout -> linear. ``SkeletonNet(num_classes, net, width, dropout)``; about 50k
parameters at width 64: it trains in seconds per epoch on a CPU.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlkdd.pose.features import FEATURES, mask_of, pose_features

__all__ = ["SkeletonNet", "random_similarity", "skeleton_arch", "skeleton_from_arch"]


class _TemporalBlock(nn.Module):
    def __init__(self, width: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.bn = nn.BatchNorm1d(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(torch.relu(self.bn(self.conv(x))))


class SkeletonNet(nn.Module):
    """See the module docstring. ``forward(keypoints, mask=None) -> logits``."""

    def __init__(self, num_classes: int, net: str = "tcn", width: int = 64, dropout: float = 0.3):
        super().__init__()
        self.net = net
        self.in_norm = nn.BatchNorm1d(FEATURES)
        if net == "tcn":
            self.embed = nn.Conv1d(FEATURES, width, 1)
            self.blocks = nn.Sequential(*[_TemporalBlock(width, d, dropout) for d in (1, 2, 4)])
            out = width
        elif net == "gru":
            self.gru = nn.GRU(FEATURES, width, batch_first=True, bidirectional=True)
            out = 2 * width
        else:
            raise ValueError(f"unknown skeleton net {net!r}; expected tcn or gru")
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * out, num_classes)

    def forward(self, keypoints: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if keypoints.dim() == 5:  # (B,V,T,33,4): V windows of each clip, logits averaged
            b, v = keypoints.shape[:2]
            m = mask.flatten(0, 1) if mask is not None else None
            return self.forward(keypoints.flatten(0, 1), m).reshape(b, v, -1).mean(1)
        if mask is None:
            mask = mask_of(keypoints)
        m = mask.to(keypoints.dtype)
        if self.training:
            keypoints = random_similarity(keypoints, mask)
        x = self.in_norm(pose_features(keypoints, mask).transpose(1, 2)).transpose(1, 2) * m[..., None]  # (B,T,F)
        if self.net == "tcn":
            h = self.blocks(self.embed(x.transpose(1, 2))).transpose(1, 2)  # (B,T,W)
        else:
            h = self.gru(x)[0]
        n = m.sum(1, keepdim=True)
        mean = (h * m[..., None]).sum(1) / n.clamp(min=1)
        mx = h.masked_fill(~mask[..., None].bool(), float("-inf")).amax(1)
        mx = torch.where(n > 0, mx, torch.zeros_like(mx))
        return self.fc(self.drop(torch.cat([mean, mx], dim=1)))


def random_similarity(keypoints: torch.Tensor, mask: torch.Tensor, max_deg: float = 15.0,
                      scale: tuple[float, float] = (0.85, 1.15)) -> torch.Tensor:
    """``(B,T,33,4)`` keypoints with x, y rotated and scaled about (0.5, 0.5), one draw per window (torch's RNG);
    frames without a person stay zero."""
    b = keypoints.shape[0]
    a = (torch.rand(b, device=keypoints.device) * 2 - 1) * max_deg * torch.pi / 180
    sc = torch.empty(b, 2, device=keypoints.device).uniform_(*scale)
    rot = torch.stack([torch.stack([a.cos(), -a.sin()], -1), torch.stack([a.sin(), a.cos()], -1)], -2)  # (B,2,2)
    xy = (keypoints[..., :2] - 0.5) * sc[:, None, None, :]
    xy = torch.einsum("bij,btkj->btki", rot, xy) + 0.5
    out = torch.cat([xy, keypoints[..., 2:]], -1)
    return out * mask[..., None, None].to(out.dtype)


def skeleton_arch(pose_cfg: Any, num_classes: int) -> dict[str, Any]:
    """The checkpoint's ``arch`` of a skeleton network (rebuilt by :func:`skeleton_from_arch`)."""
    return {"family": "pose", "net": pose_cfg.net, "width": int(pose_cfg.width), "dropout": float(pose_cfg.dropout),
            "num_classes": int(num_classes), "features": FEATURES}


def skeleton_from_arch(arch: dict[str, Any]) -> SkeletonNet:
    return SkeletonNet(int(arch["num_classes"]), arch.get("net", "tcn"), int(arch.get("width", 64)),
                       float(arch.get("dropout", 0.3)))
