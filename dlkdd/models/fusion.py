"""Fusion of S feature streams per temporal token: Dynamic Feature Fusion and a static average.

ActLumos (Suresh Dass et al.) fuses the dark and the Retinex-enhanced streams of its teacher
with *Dynamic Feature Fusion*: at every temporal token the streams are weighted by scores
computed from both streams' features, normalised across the streams, so the more informative
stream dominates at each time step. The paper compares it with a static fusion (fixed
average); :class:`StaticFusion` is that baseline.

Shapes (S streams, here S = 2)::

    maps     S x (B,C,T',H',W')   backbone maps of the streams (same shape)
    tokens   S x (B,T',C)         spatial means of the maps (one token per time step)
    weights  (B,T',S)             > 0, sum to 1 over S at every (b, t)
    fused    (B,C,T',H',W')       sum_s weights[b,t,s] * maps[s][b,:,t]  (broadcast over H',W')

Dynamic weights: ``w[b,t] = softmax_s( MLP( concat_s tokens[s][b,t] ) )`` with
``MLP = Linear(S*C, hidden) -> ReLU -> Linear(hidden, S)``. The weights decide from the
spatially pooled tokens and are applied to the full maps, so the temporal head downstream
(BERT: its own spatial mean per token) sees exactly the weighted tokens, and an average head
sees the weighted map. The last linear layer starts at zero, so an untrained dynamic fusion
equals the static average and departs from it as it learns.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["tokens_of", "DynamicFusion", "StaticFusion", "build_fusion", "FUSIONS"]

FUSIONS = ("dynamic", "static")


def tokens_of(feat: torch.Tensor) -> torch.Tensor:
    """(B,C,T',H',W') map -> (B,T',C) temporal tokens (spatial mean)."""
    if feat.dim() != 5:
        raise ValueError(f"expected a map (B,C,T',H',W'), got {tuple(feat.shape)}")
    return feat.mean(dim=(3, 4)).transpose(1, 2)


def _check_maps(maps: Sequence[torch.Tensor], streams: int) -> None:
    if len(maps) != streams:
        raise ValueError(f"expected {streams} stream maps, got {len(maps)}")
    shape = maps[0].shape
    if maps[0].dim() != 5 or any(m.shape != shape for m in maps):
        raise ValueError(f"stream maps must all be (B,C,T',H',W') of one shape, got {[tuple(m.shape) for m in maps]}")


def _apply(maps: Sequence[torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    """sum_s w[b,t,s] * maps[s][b,:,t,:,:] -> (B,C,T',H',W')."""
    out = 0
    for s, m in enumerate(maps):
        out = out + m * w[:, :, s].to(m.dtype)[:, None, :, None, None]
    return out


class DynamicFusion(nn.Module):
    """Per-time-step softmax weights over ``streams`` from an MLP on the concatenated tokens."""

    def __init__(self, dim: int = 512, streams: int = 2, hidden: int = 128):
        super().__init__()
        if streams < 2:
            raise ValueError(f"fusion needs >= 2 streams, got {streams}")
        self.dim, self.streams = int(dim), int(streams)
        self.score = nn.Sequential(nn.Linear(streams * dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, streams))
        nn.init.zeros_(self.score[2].weight)
        nn.init.zeros_(self.score[2].bias)

    def weights(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """S maps (B,C,T',H',W') -> weights (B,T',S), softmax over the streams."""
        _check_maps(maps, self.streams)
        if maps[0].shape[1] != self.dim:
            raise ValueError(f"DynamicFusion built for {self.dim} channels, got {maps[0].shape[1]}")
        tokens = torch.cat([tokens_of(m) for m in maps], dim=-1)  # (B,T',S*C)
        return torch.softmax(self.score(tokens).float(), dim=-1)

    def forward(self, maps: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (fused map (B,C,T',H',W'), weights (B,T',S))."""
        w = self.weights(maps)
        return _apply(maps, w), w


class StaticFusion(nn.Module):
    """Fixed average: weight ``1/S`` for every stream at every time step (no parameters)."""

    def __init__(self, dim: int = 512, streams: int = 2):
        super().__init__()
        if streams < 2:
            raise ValueError(f"fusion needs >= 2 streams, got {streams}")
        self.dim, self.streams = int(dim), int(streams)

    def weights(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_maps(maps, self.streams)
        b, _, t = maps[0].shape[:3]
        return torch.full((b, t, self.streams), 1.0 / self.streams, device=maps[0].device)

    def forward(self, maps: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights(maps)
        return _apply(maps, w), w


def build_fusion(kind: str, dim: int = 512, streams: int = 2) -> nn.Module:
    """``dynamic`` -> :class:`DynamicFusion`, ``static`` -> :class:`StaticFusion`."""
    if kind == "dynamic":
        return DynamicFusion(dim, streams)
    if kind == "static":
        return StaticFusion(dim, streams)
    raise ValueError(f"unknown fusion {kind!r}; choose one of {', '.join(FUSIONS)} (config key actlumos.fusion)")
