"""R(2+1)D video ResNets, state-dict compatible with torchvision and the IG65M release.

R(2+1)D (Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action Recognition",
CVPR 2018) factorises each 3x3x3 convolution into a 1x3x3 spatial convolution to ``M``
mid-channels, BatchNorm + ReLU, then a 3x1x1 temporal convolution, with
``M = floor(t*d^2*N_in*N_out / (d^2*N_in + t*N_out))`` (t=3, d=3) so the factorised block has
about the parameters of the full 3D one (paper, section 3.5).

Networks (``build_r2plus1d(name, num_classes)``):

- ``r2plus1d_18``: layers [2,2,2,2], the layout of torchvision's ``models/video/resnet.py``
  (``VideoResNet`` with ``R2Plus1dStem`` and ``BasicBlock``), so its Kinetics-400 weights load.
- ``r2plus1d_34``: layers [3,4,6,3], same layout.
- ``r2plus1d_34_ig65m``: the R(2+1)D-34 of the IG65M weights (Ghadiyaram et al., "Large-scale
  weakly-supervised pre-training for video action recognition", CVPR 2019; ported from Caffe2
  by the ig65m-pytorch project): layers [3,4,6,3], but the second convolution of the first block
  of layers 2-4 uses Caffe2's mid-channels (computed from ``planes -> planes``: 288/576/1152
  instead of torchvision's 230/460/921 computed from ``in_planes -> planes``), and every
  BatchNorm3d uses eps 1e-3.
- ``r2plus1d_tiny``: not a published network — layers [1,1,1,1] at a quarter of the width
  (16/32/64/128 channels, 11 stem mid-channels, features (B,128,...)), about 1/70 of R(2+1)D-18's
  parameters: for smoke tests, the test suite and trying the pipeline on a laptop. Its weights
  fit no published checkpoint.

Shapes: ``forward(x (B,3,T,H,W)) -> logits (B,num_classes)`` (adaptive average pool, flatten,
fc, as torchvision); ``features(x) -> (B,D,T',H',W')`` (``D = feature_dim``: 512, 128 for the tiny
network) with ``T' = ceil(T/8)``,
``H' = ceil(H/16)``, ``W' = ceil(W/16)`` (stem stride (1,2,2), then three (2,2,2) stages).

``load_pretrained(model, path, num_classes=None)`` loads a published checkpoint (bare state
dict, or wrapped under ``state_dict``/``model``; ``module.`` prefixes stripped) or the trunk of
a dlkdd checkpoint (``model`` holding a Classifier state dict, ``backbone.`` prefix).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from dlkdd.errors import CheckpointError
from dlkdd.models.weights import load_error_reason, weights_mismatch

log = logging.getLogger(__name__)

__all__ = [
    "Conv2Plus1D",
    "BasicBlock",
    "R2Plus1dStem",
    "VideoResNet",
    "R2PLUS1D_NAMES",
    "midplanes",
    "build_r2plus1d",
    "feature_dim_of",
    "load_pretrained",
    "extract_state_dict",
]

R2PLUS1D_NAMES = ("r2plus1d_18", "r2plus1d_34", "r2plus1d_34_ig65m", "r2plus1d_tiny")


def midplanes(in_planes: int, out_planes: int) -> int:
    """Mid-channels of a (2+1)D conv with ~the parameters of a 3x3x3 conv (Tran et al. 2018, sec. 3.5)."""
    return (in_planes * out_planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * out_planes)


class Conv2Plus1D(nn.Sequential):
    """(2+1)D convolution: (B,C_in,T,H,W) -> (B,C_out,T/s,H/s,W/s).

    Sub-modules (state-dict indices as torchvision): 0 spatial Conv3d (1,3,3), 1 BatchNorm3d,
    2 ReLU, 3 temporal Conv3d (3,1,1). No bias (a BatchNorm follows).
    """

    def __init__(self, in_planes: int, out_planes: int, mid_planes: int, stride: int = 1,
                 padding: int = 1, bn_eps: float = 1e-5):
        super().__init__(
            nn.Conv3d(in_planes, mid_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                      padding=(0, padding, padding), bias=False),
            nn.BatchNorm3d(mid_planes, eps=bn_eps),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid_planes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                      padding=(padding, 0, 0), bias=False),
        )


class BasicBlock(nn.Module):
    """Residual block of two (2+1)D convs: (B,in_planes,T,H,W) -> (B,planes,T/s,H/s,W/s).

    ``mid1``/``mid2``: mid-channels of conv1/conv2 (torchvision uses ``midplanes(in_planes, planes)``
    for both; the Caffe2/IG65M nets use ``midplanes(planes, planes)`` for conv2).
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, mid1: int, mid2: int, stride: int = 1,
                 downsample: nn.Module | None = None, bn_eps: float = 1e-5):
        super().__init__()
        self.conv1 = nn.Sequential(
            Conv2Plus1D(in_planes, planes, mid1, stride, bn_eps=bn_eps),
            nn.BatchNorm3d(planes, eps=bn_eps),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(
            Conv2Plus1D(planes, planes, mid2, bn_eps=bn_eps),
            nn.BatchNorm3d(planes, eps=bn_eps),
        )
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        return self.relu(out + residual)


class R2Plus1dStem(nn.Sequential):
    """R(2+1)D stem: (B,3,T,H,W) -> (B,width,T,H/2,W/2); 45 mid-channels at width 64 (torchvision
    layout), ``45 * width // 64`` otherwise."""

    def __init__(self, bn_eps: float = 1e-5, width: int = 64):
        mid = 45 * width // 64
        super().__init__(
            nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(mid, eps=bn_eps),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, width, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(width, eps=bn_eps),
            nn.ReLU(inplace=True),
        )


class VideoResNet(nn.Module):
    """R(2+1)D ResNet trunk + classifier.

    ``layers``: blocks per stage; ``caffe2_midplanes``: conv2 of each stage's first block uses
    ``midplanes(planes, planes)``; ``bn_eps``: eps of every BatchNorm3d; ``width``: channels of the
    stem and layer1 (64 in every published R(2+1)D; the stages have width x 1, 2, 4, 8).
    Initialisation as torchvision: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0,
    fc normal(0, 0.01) / bias 0.
    """

    def __init__(self, layers: tuple[int, int, int, int] = (2, 2, 2, 2), num_classes: int = 400,
                 caffe2_midplanes: bool = False, bn_eps: float = 1e-5, width: int = 64):
        super().__init__()
        self.in_planes = width
        self.bn_eps = bn_eps
        self.caffe2_midplanes = caffe2_midplanes
        self.stem = R2Plus1dStem(bn_eps, width)
        self.layer1 = self._make_layer(width, layers[0], stride=1)
        self.layer2 = self._make_layer(2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.feature_dim = 8 * width
        self.fc: nn.Module = nn.Linear(self.feature_dim, num_classes)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes:
            downsample = nn.Sequential(
                nn.Conv3d(self.in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(planes, eps=self.bn_eps),
            )
        mid1 = midplanes(self.in_planes, planes)
        mid2 = midplanes(planes, planes) if self.caffe2_midplanes else mid1
        mods = [BasicBlock(self.in_planes, planes, mid1, mid2, stride, downsample, self.bn_eps)]
        self.in_planes = planes
        for _ in range(1, blocks):
            m = midplanes(planes, planes)
            mods.append(BasicBlock(planes, planes, m, m, bn_eps=self.bn_eps))
        return nn.Sequential(*mods)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,T,H,W) normalised clip -> trunk map (B,feature_dim,T',H',W')."""
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,T,H,W) -> logits (B,num_classes) (or pooled (B,feature_dim) when ``fc`` is Identity)."""
        return self.fc(self.avgpool(self.features(x)).flatten(1))


_SPECS: dict[str, dict] = {
    "r2plus1d_18": dict(layers=(2, 2, 2, 2)),
    "r2plus1d_34": dict(layers=(3, 4, 6, 3)),
    "r2plus1d_34_ig65m": dict(layers=(3, 4, 6, 3), caffe2_midplanes=True, bn_eps=1e-3),
    "r2plus1d_tiny": dict(layers=(1, 1, 1, 1), width=16),
}


def feature_dim_of(name: str) -> int:
    """Channels of ``name``'s trunk output (512; 128 for ``r2plus1d_tiny``)."""
    if name not in _SPECS:
        raise ValueError(f"unknown R(2+1)D network {name!r}; choose one of {', '.join(R2PLUS1D_NAMES)}")
    return 8 * int(_SPECS[name].get("width", 64))


def build_r2plus1d(name: str, num_classes: int = 400) -> VideoResNet:
    """Build ``r2plus1d_18`` | ``r2plus1d_34`` | ``r2plus1d_34_ig65m`` | ``r2plus1d_tiny`` with a fresh fc
    of ``num_classes``."""
    if name not in _SPECS:
        raise ValueError(f"unknown R(2+1)D network {name!r}; choose one of {', '.join(R2PLUS1D_NAMES)}")
    return VideoResNet(num_classes=num_classes, **_SPECS[name])


# ----------------------------------------------------------------------------------------
# Checkpoint loading
# ----------------------------------------------------------------------------------------

def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def extract_state_dict(obj: object, path: str | Path = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The backbone state dict inside a loaded checkpoint object.

    Accepts a bare state dict, ``{"state_dict": sd}``, ``{"model": sd}`` (``module.`` prefixes
    stripped), and a dlkdd checkpoint / Classifier state dict whose trunk keys start with
    ``backbone.`` (only those are kept, prefix removed).
    """
    sd = obj
    for _ in range(3):  # unwrap nested {"state_dict": {...}} / {"model": {...}}
        if isinstance(sd, Mapping) and not any(torch.is_tensor(v) for v in sd.values()):
            inner = next((sd[k] for k in ("state_dict", "model") if isinstance(sd.get(k), Mapping)), None)
            if inner is None:
                break
            sd = inner
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(f"{path}: not a state dict (nor one wrapped under 'state_dict' or 'model')")
    sd = {k: v for k, v in sd.items() if torch.is_tensor(v)}
    if not sd:
        raise CheckpointError(f"{path}: not a state dict (it holds no tensors, at the top level "
                              "or under 'state_dict' / 'model')")
    sd = _strip(sd, "module.")
    for prefix in ("backbone.", "classifier.backbone."):  # dlkdd Classifier / Teacher: trunk only
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            sd = _strip(sd, "module.")
            break
    return sd


def load_pretrained(model: VideoResNet, path: str | Path, num_classes: int | None = None) -> VideoResNet:
    """Load published or dlkdd R(2+1)D weights from ``path`` into ``model`` (in place; returned).

    - ``num_classes``: if given and ``model.fc`` is a Linear of another size, ``model.fc`` is
      first replaced by a fresh ``Linear(512, num_classes)``.
    - A checkpoint ``fc`` of another shape than the model's (another class count), or any ``fc``
      when the model has none (``fc`` = Identity, as inside a Classifier), is dropped; a model
      ``fc`` absent from the checkpoint (a trunk-only checkpoint) is kept fresh.
    - Everything else must match exactly; otherwise :class:`CheckpointError` lists the missing,
      unexpected and mis-shaped keys (first few of each, with counts).
    Loaded with ``torch.load(weights_only=True)`` (no arbitrary pickles).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained checkpoint not found (set model.pretrained to an existing file or '')")
    if num_classes is not None and isinstance(model.fc, nn.Linear) and model.fc.out_features != num_classes:
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        nn.init.normal_(model.fc.weight, 0.0, 0.01)
        nn.init.zeros_(model.fc.bias)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch file, or a pickle needing code
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({load_error_reason(e)})") from None
    sd = extract_state_dict(obj, path)

    own = model.state_dict()
    dropped = [k for k in sd if k.startswith("fc.") and (k not in own or own[k].shape != sd[k].shape)]
    if dropped:
        log.info("%s: dropping checkpoint classifier %s (model keeps its fresh fc)", path, dropped)
        sd = {k: v for k, v in sd.items() if k not in dropped}
    fresh_fc = {k for k in own if k.startswith("fc.") and k not in sd}  # model keeps its own fc
    report = weights_mismatch(own, sd, optional=fresh_fc)
    if report:
        raise CheckpointError(
            f"{path}: does not fit this R(2+1)D network ({report}). "
            "Check model.backbone (r2plus1d_18 | r2plus1d_34 | r2plus1d_34_ig65m) matches the checkpoint."
        )
    model.load_state_dict(sd, strict=False)
    log.info("loaded pretrained R(2+1)D weights from %s (%d tensors)", path, len(sd))
    return model
