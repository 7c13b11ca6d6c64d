"""The networks the benchmark compares, built from a config.

- :func:`bench_teacher`: the DL-KDD teacher (frozen ZeroDCE -> R(2+1)D-BERT) of
  :func:`dlkdd.models.build.build_teacher`; when the official ZeroDCE weights
  (``enhancer.weights``) are absent a randomly initialised ZeroDCE stands in - its cost is the same.
- :class:`TwoStream`: two-stream inference, ``(f(x) + f(gamma(x))) / 2`` with one shared
  classifier ``f`` run on the original clip and on its gamma-enhanced copy (both passes);
  ``x`` (B,3,T,H,W) in [0,1] -> logits (B,C).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["bench_teacher", "TwoStream"]


def bench_teacher(cfg: Any, num_classes: int, classifier: nn.Module | None = None) -> tuple[nn.Module, str]:
    """``(teacher, enhancer_note)``; ``classifier``: reuse this classifier (shared weights)."""
    from dlkdd.models.build import build_student
    from dlkdd.models.classifier import Teacher
    from dlkdd.models.enhancers import build_enhancer
    from dlkdd.models.zerodce import ZeroDCEEnhancer

    if cfg.enhancer.kind == "zerodce" and not Path(cfg.enhancer.weights).is_file():
        log.warning("ZeroDCE weights %s not found: the benchmark uses a randomly initialised ZeroDCE "
                    "(same cost)", cfg.enhancer.weights)
        enh, note = ZeroDCEEnhancer().eval(), "ZeroDCE (random init; official weights absent)"
    else:
        enh, note = build_enhancer(cfg.enhancer), f"{cfg.enhancer.kind} ({cfg.enhancer.weights})"
    return Teacher(enh, classifier if classifier is not None else build_student(cfg, num_classes)), note


class TwoStream(nn.Module):
    """Original + gamma-enhanced streams through one shared classifier, logits averaged."""

    def __init__(self, classifier: nn.Module, gamma: float = 3.0) -> None:
        super().__init__()
        from dlkdd.models.enhancers import GammaCorrection

        self.classifier = classifier
        self.gamma = GammaCorrection(gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.classifier(x) + self.classifier(self.gamma(x)))
