"""Per-frame (TSN-style) helpers for 2D trunks on clips: frame folding, the temporal shift (TSM,
Lin, Gan & Han 2019, "TSM: Temporal Shift Module for Efficient Video Understanding") and an
identity-initialised depthwise temporal convolution.

``temporal_shift(x (B*T, C, H, W), frames=T, fold_div=8) -> (B*T, C, H, W)``: with
``f = C // fold_div``, channels ``[0, f)`` move one step back in time (frame t reads frame t+1),
channels ``[f, 2f)`` one step forward (frame t reads frame t-1), the rest stay; a frame without
that neighbour reads zeros (TSM's zero padding; a 1-frame clip gets zeros in those channels).
The paper's default shifts 1/8 + 1/8 of the channels and puts the shift inside the residual
branch ("residual shift"), which the trunks here do. No parameters, no multiply-adds; written with ``torch.cat`` (no
in-place writes) so that it exports to ONNX.

``frames_to_batch(x (B,C,T,H,W)) -> (B*T,C,H,W)`` (frame t of clip b at row ``b*T + t``) and
``batch_to_frames(y (B*T,C,H,W), batch=B) -> (B,C,T,H,W)``, its inverse.

``TemporalConv(channels)``: (B, C, T, H, W) -> same shape; a depthwise 3x1x1 convolution over
time whose kernel starts as the identity ``[0, 1, 0]``, so that a pretrained trunk's output is
unchanged at initialisation (a cheap temporal layer after a TSN-style trunk: 3C weights).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["frames_to_batch", "batch_to_frames", "temporal_shift", "TemporalConv"]


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """(B,C,T,H,W) -> (B*T,C,H,W): each frame becomes an image of the batch."""
    if x.dim() != 5:
        raise ValueError(f"expected clips (B,C,T,H,W), got {tuple(x.shape)}")
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def batch_to_frames(y: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*T,C,H,W) -> (B,C,T,H,W), the inverse of :func:`frames_to_batch`."""
    n, c, h, w = y.shape
    return y.view(batch, n // batch, c, h, w).transpose(1, 2)


def temporal_shift(x: torch.Tensor, frames: int, fold_div: int = 8) -> torch.Tensor:
    """Shift 1/fold_div of the channels back and 1/fold_div forward in time (see module doc)."""
    if x.dim() != 4 or x.shape[0] % frames:
        raise ValueError(f"temporal_shift expects (B*T,C,H,W) with T={frames} dividing the batch, got {tuple(x.shape)}")
    n, c, h, w = x.shape
    fold = c // fold_div
    if fold == 0:
        return x
    v = x.view(n // frames, frames, c, h, w)
    pad = v.new_zeros(n // frames, 1, fold, h, w)
    back = torch.cat([v[:, 1:, :fold], pad], 1)             # frame t <- frame t+1
    fwd = torch.cat([pad, v[:, :-1, fold:2 * fold]], 1)     # frame t <- frame t-1
    return torch.cat([back, fwd, v[:, :, 2 * fold:]], 2).view(n, c, h, w)


class TemporalConv(nn.Module):
    """Depthwise temporal convolution (kernel 3 over T, identity at init); (B,C,T,H,W) -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0), groups=channels, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, 0, 1] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
