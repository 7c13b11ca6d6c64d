"""The ActLumos pre-training network: the student's trunk + a projection head.

    x (B,3,T,H,W) in [0,1] -> (x - mean)/std -> trunk (B,D,T',H',W') (:mod:`dlkdd.models.backbones`)
      -> mean over T',H',W' (B,D) -> Linear D -> ReLU -> Linear proj_dim -> z (B,proj_dim)

State dict ``mean``, ``std``, ``backbone.*`` (torchvision names), ``proj.*``: the ``backbone.``
prefix is what the backbone's ``load_pretrained`` (R(2+1)D: :func:`dlkdd.models.r2plus1d.load_pretrained`)
takes from a dlkdd checkpoint, so
``--set model.pretrained=OUT/pretrain.pt`` initialises the student's trunk (the temporal head and
classifier start fresh, the projection head is dropped). Trained by :mod:`dlkdd.pipeline.pretrain`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from dlkdd.models.backbones import backbone_spec

__all__ = ["PretrainNet"]


class PretrainNet(nn.Module):
    """normalise -> trunk -> global average -> projection MLP (see the module docstring)."""

    def __init__(self, backbone_name: str = "r2plus1d_18", mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0), proj_dim: int = 128):
        super().__init__()
        self.register_buffer("mean", torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1, 1))
        self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, 3, 1, 1, 1))
        spec = backbone_spec(backbone_name)
        self.backbone = spec.build(1)
        dim = spec.feature_dim
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, int(proj_dim)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,3,T,H,W) in [0,1] -> pooled trunk feature (B,D)."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"PretrainNet expects clips (B,3,T,H,W), got {tuple(x.shape)}")
        return self.backbone.features((x - self.mean) / self.std).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,3,T,H,W) -> projection z (B,proj_dim) (not normalised; info_nce normalises)."""
        return self.proj(self.embed(x))
