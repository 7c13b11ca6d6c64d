"""The backbone table: config name (``model.backbone``) -> :class:`BackboneSpec`.

A backbone is a video trunk::

    trunk = spec.build(num_classes)
    trunk.features(x (B,3,T,H,W) normalised) -> (B, D, T', H', W')
        D  = spec.feature_dim
        T' = ceil(T / spec.temporal_stride)            (T >= spec.min_frames)

Every consumer asks this table, never a trunk module: the classifier and the teacher
(:mod:`dlkdd.models.classifier`), ActLumos (:mod:`dlkdd.models.actlumos`), the pre-training net
(:mod:`dlkdd.models.pretrain_net`), the width of cached features
(:mod:`dlkdd.pipeline.cache_logits`), the frame range of an export (:mod:`dlkdd.deploy.spec`) and
config validation (``model.backbone``, :mod:`dlkdd.config_sections`).

``build(num_classes)``: ``num_classes`` sizes the classifier slot of a published layout (R(2+1)D
keeps torchvision's ``fc``; the built trunk's ``fc`` is ``nn.Identity``, so no parameters of it
reach a state dict). It is passed so that the random initialisation of everything built after the
trunk (the heads) stays what it was: a trunk without such a slot ignores it.
``load_pretrained(trunk, path)``: published or dlkdd weights from a file into the trunk (in place;
returned); nothing is downloaded. ``path = "imagenet"``: the ImageNet file shipped in an installed
package (the ``dlkdd[imagenet]`` extra), for trunks whose ``imagenet_normalize`` names the
``model.normalize`` choice those weights were trained with (the classifier refuses any other).

``int8_fp32_modules``: the trunk's static int8 recipe (``dlkdd export --int8 static``,
:mod:`dlkdd.deploy.quantize`): the trunk's module paths (``named_modules`` names; a path also covers
the modules under it) whose ONNX nodes stay fp32 while the rest is quantised. ``None``: no recipe was
measured faster than fp32 for this trunk, so static int8 is refused (BENCHMARKS.md, "Lightweight
students"). The light trunks keep the stem, the first 3 blocks (full resolution, where the dark
frames' small values live) and the 1x1 head conv in fp32: quantising every conv left the pooled
features at cosine 0.94 to fp32, this recipe at 0.998, still 1.6-1.8x faster.

Adding a backbone: a module that builds the trunk, and one entry in :data:`BACKBONES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from dlkdd.models import efficientnet_lite, mobilenet_v2, r2plus1d

__all__ = ["BackboneSpec", "BACKBONES", "backbone_spec", "backbone_names"]


@dataclass(frozen=True)
class BackboneSpec:
    """What a consumer needs to know of a trunk (see the module docstring)."""

    build: Callable[[int], nn.Module]
    feature_dim: int
    temporal_stride: int
    min_frames: int
    load_pretrained: Callable[[nn.Module, str], nn.Module]
    summary: str
    imagenet_normalize: str = ""  # the model.normalize its packaged ImageNet weights expect; "": it ships none
    int8_fp32_modules: tuple[str, ...] | None = None  # static int8 recipe: trunk modules kept fp32; None: refused


def _r2plus1d_trunk(name: str, num_classes: int = 1) -> nn.Module:
    trunk = r2plus1d.build_r2plus1d(name, num_classes)
    trunk.fc = nn.Identity()
    return trunk


def _r2plus1d(name: str, width: int, summary: str) -> BackboneSpec:
    # three (2,2,2) stages halve time: T' = ceil(T/8) (dlkdd/models/r2plus1d.py); any T >= 1 runs
    return BackboneSpec(build=partial(_r2plus1d_trunk, name), feature_dim=8 * width, temporal_stride=8,
                        min_frames=1, load_pretrained=r2plus1d.load_pretrained, summary=summary)


def _efficientnet_lite0(num_classes: int = 1) -> nn.Module:
    return efficientnet_lite.build_efficientnet_lite0(shift=True)  # no fc: the head classifies


def _mobilenet_v2(num_classes: int = 1) -> nn.Module:
    return mobilenet_v2.build_mobilenet_v2(shift=True)


BACKBONES: dict[str, BackboneSpec] = {
    "r2plus1d_18": _r2plus1d("r2plus1d_18", 64, "R(2+1)D-18, torchvision layout (Kinetics-400 weights load)"),
    "r2plus1d_34": _r2plus1d("r2plus1d_34", 64, "R(2+1)D-34, torchvision layout"),
    "r2plus1d_34_ig65m": _r2plus1d("r2plus1d_34_ig65m", 64, "R(2+1)D-34 of the IG65M release (Caffe2 layout)"),
    "r2plus1d_tiny": _r2plus1d("r2plus1d_tiny", 16, "quarter-width R(2+1)D-10 for tests and laptops; no weights"),
    # per-frame 2D trunks (issue 24): T' = T, H' = ceil(H/32); TSM shift in the blocks at 1/16 and 1/32
    "efficientnet_lite0": BackboneSpec(
        build=_efficientnet_lite0, feature_dim=1280, temporal_stride=1, min_frames=1,
        load_pretrained=efficientnet_lite.load_imagenet, imagenet_normalize="inception",
        # stem conv (+ its bn), blocks 0-2 (1/2 and 1/4 resolution), head conv (+ its bn)
        int8_fp32_modules=("_conv_stem", "_bn0", "_blocks.0", "_blocks.1", "_blocks.2", "_conv_head", "_bn1"),
        summary="EfficientNet-Lite0 per frame + TSM shift; ImageNet weights (dlkdd[imagenet]) want "
                "model.normalize=inception"),
    "mobilenet_v2": BackboneSpec(
        build=_mobilenet_v2, feature_dim=1280, temporal_stride=1, min_frames=1,
        load_pretrained=mobilenet_v2.load_imagenet, imagenet_normalize="imagenet",
        # the same cut as EfficientNet-Lite0: stem, the 16- and 24-channel blocks, the 1x1 head conv
        int8_fp32_modules=("layers.0", "layers.1", "layers.2", "layers.3", "layers.18"),
        summary="MobileNetV2 1.0 per frame + TSM shift; ImageNet weights (dlkdd[imagenet]) want "
                "model.normalize=imagenet"),
}


def backbone_names() -> tuple[str, ...]:
    return tuple(BACKBONES)


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of ``name``; an unknown name is a :class:`~dlkdd.config_sections.ConfigError` listing the table."""
    from dlkdd.config_sections import table_entry

    return table_entry(BACKBONES, name, "model.backbone", "backbone")
