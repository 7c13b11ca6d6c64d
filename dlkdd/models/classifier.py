"""The action classifier (normalise -> video trunk -> temporal head) and the teacher.

Classifier: x (B,3,T,H,W) float in [0,1] -> (x - mean) / std [-> with ``input="diff"``, the T-1
differences of consecutive frames, (B,3,T-1,H,W)] -> ``backbone.features``
(B,D,T',H',W') -> head (BERT or average) -> logits (B,C); with ``return_features=True`` also
the head's feature vector (B,D). The trunk and ``D`` come from the backbone table
(:mod:`dlkdd.models.backbones`; D = 512 for the published R(2+1)D, whose ``fc`` is an
``nn.Identity``), so the state dict holds ``mean``, ``std``, ``backbone.*`` (torchvision/IG65M
names for R(2+1)D) and ``head.*``.

Teacher (DL-KDD, Chang, Chen & Tseng): x (B,3,T,H,W) in [0,1] -> frozen enhancer (eval mode,
no gradient; ZeroDCE or another ``dlkdd.models.enhancers`` module) -> Classifier.

``arch_dict(model_cfg, num_classes)`` is the plain dict stored in checkpoints (``arch``) and
``classifier_from_arch(arch)`` rebuilds an untrained Classifier of that architecture.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import nn

from .bert_head import AvgHead, BertHead
from .backbones import backbone_spec

log = logging.getLogger(__name__)

__all__ = ["Classifier", "Teacher", "build_classifier", "arch_dict", "classifier_from_arch"]

HEADS = ("bert", "avg")
INPUTS = ("rgb", "diff")


class Classifier(nn.Module):
    """normalise -> trunk -> temporal head. Input sizes are free (T >= the trunk's ``min_frames``,
    one more with ``input="diff"``; H,W >= 1)."""

    def __init__(self, arch: Mapping[str, Any]):
        """``arch``: :func:`arch_dict`'s dict (``backbone``, ``num_classes``, ``head``, ``mean``/``std``,
        ``dropouts`` {head, bert}, ``token_keep``, ``input``); absent keys take the defaults (R(2+1)D-18,
        BERT head, no normalisation, dropouts 0.8/0.1, token_keep 0.8, rgb)."""
        super().__init__()
        head, input = arch.get("head", "bert"), str(arch.get("input", "rgb"))
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
        if input not in INPUTS:
            raise ValueError(f"unknown input {input!r}; choose one of {', '.join(INPUTS)}")
        drops = arch.get("dropouts", {}) or {}
        self.input = input
        self.backbone_name = arch.get("backbone", "r2plus1d_18")
        self.head_name = head
        self.num_classes = num_classes = int(arch["num_classes"])
        mean, std = arch.get("mean", (0.0, 0.0, 0.0)), arch.get("std", (1.0, 1.0, 1.0))
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1, 1))
        spec = backbone_spec(self.backbone_name)
        self.backbone = spec.build(num_classes)
        dim = spec.feature_dim
        head_dropout = float(drops.get("head", 0.8))
        if head == "bert":
            self.head: nn.Module = BertHead(dim, num_classes, ffn=4 * dim, dropout=float(drops.get("bert", 0.1)),
                                            head_dropout=head_dropout, token_keep=float(arch.get("token_keep", 0.8)))
        else:
            self.head = AvgHead(dim, num_classes, head_dropout=head_dropout)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """x (B,3,T,H,W) in [0,1] -> logits (B,C) or (logits, feature (B,D))."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"Classifier expects clips (B,3,T,H,W), got {tuple(x.shape)}")
        x = (x - self.mean) / self.std
        if self.input == "diff":
            if x.shape[2] < 2:
                raise ValueError(f"model.input=diff needs clips of >= 2 frames, got {x.shape[2]}")
            x = x[:, :, 1:] - x[:, :, :-1]
        return self.head(self.backbone.features(x), return_features=return_features)


class Teacher(nn.Module):
    """Frozen enhancer -> classifier. The enhancer never trains: its parameters have
    ``requires_grad=False``, it stays in eval mode through ``.train()``, and runs under
    ``torch.no_grad``. Enhancers exposing ``enhance(x)`` (ZeroDCE) are called through it,
    others as ``enhancer(x)``; either maps (B,3,T,H,W) in [0,1] to the same shape."""

    def __init__(self, enhancer: nn.Module, classifier: Classifier):
        super().__init__()
        self.enhancer = enhancer
        self.classifier = classifier
        for p in self.enhancer.parameters():
            p.requires_grad_(False)
        self.enhancer.eval()

    def train(self, mode: bool = True) -> "Teacher":
        super().train(mode)
        self.enhancer.eval()
        return self

    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,T,H,W) in [0,1] -> enhanced clip, same shape, no gradient."""
        with torch.no_grad():
            fn = getattr(self.enhancer, "enhance", None)
            return fn(x) if callable(fn) else self.enhancer(x)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        return self.classifier(self.enhance(x), return_features=return_features)


def arch_dict(model_cfg: Any, num_classes: int) -> dict[str, Any]:
    """Plain (JSON/YAML-friendly) description of the classifier, stored in checkpoints as ``arch``."""
    mean, std = model_cfg.norm_stats()
    return {
        "backbone": model_cfg.backbone,
        "head": model_cfg.head,
        "num_classes": int(num_classes),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "normalize": model_cfg.normalize,
        "dropouts": {"head": float(model_cfg.head_dropout), "bert": float(model_cfg.bert_dropout)},
        "token_keep": float(model_cfg.token_keep),
        "input": str(getattr(model_cfg, "input", "rgb")),
    }


def classifier_from_arch(arch: Mapping[str, Any]) -> Classifier:
    """Rebuild an (untrained) Classifier from :func:`arch_dict`'s output."""
    return Classifier(arch)


def build_classifier(model_cfg: Any, num_classes: int) -> Classifier:
    """Classifier from a :class:`dlkdd.config.ModelConfig`; loads ``model_cfg.pretrained`` (published
    weights of the trunk or a dlkdd checkpoint, through the backbone's ``load_pretrained``) when set.
    ``pretrained: imagenet``: the trunk's packaged ImageNet weights, which need ``model_cfg.normalize``
    to be the backbone table's ``imagenet_normalize`` (:class:`ConfigError` otherwise)."""
    model = classifier_from_arch(arch_dict(model_cfg, num_classes))
    if model_cfg.pretrained:
        spec = backbone_spec(model_cfg.backbone)
        if model_cfg.pretrained == "imagenet":
            _check_imagenet_inputs(model_cfg, spec)
        spec.load_pretrained(model.backbone, model_cfg.pretrained)
    return model


def _check_imagenet_inputs(model_cfg: Any, spec: Any) -> None:
    """ImageNet weights see inputs normalised as they were trained (the backbone table's
    ``imagenet_normalize``): anything else would run them on inputs they never saw, silently."""
    from dlkdd.config_sections import ConfigError

    want = spec.imagenet_normalize
    if not want:
        raise ConfigError(f"config key 'model.pretrained': backbone {model_cfg.backbone} has no packaged ImageNet "
                          f"weights; give a weights file")
    if model_cfg.normalize != want:
        raise ConfigError(f"config key 'model.normalize': the ImageNet weights of {model_cfg.backbone} expect "
                          f"inputs normalised as '{want}', got '{model_cfg.normalize}' (--set model.normalize={want}; "
                          f"for the teacher: model.teacher_normalize={want})")
