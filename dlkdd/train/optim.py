"""AdamW with decoupled weight decay and per-step learning-rate schedules.

- :func:`build_optimizer`: AdamW (Loshchilov & Hutter 2019) with ``train.lr`` and
  ``train.weight_decay`` (DL-KDD defaults: lr 1e-4, weight decay 1e-5); biases, normalisation
  weights, embeddings (``nn.Embedding``, CLS tokens, position embeddings) get no weight decay.
- :func:`build_scheduler`: a ``LambdaLR`` stepped once per optimizer step, with an optional linear
  warm-up of ``train.warmup_epochs`` epochs followed by ``cosine`` (half-cosine to 0, Loshchilov &
  Hutter 2017, SGDR), ``constant``, or ``step`` (x ``train.step_gamma`` every ``train.step_size``
  epochs).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "LRSchedule", "param_groups"]

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
               nn.Embedding)
_NO_DECAY_NAMES = ("cls_token", "pos_embed", "position", "pos_emb")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed weights and the no-decay rest (biases, norms, embeddings)."""
    no_decay_ids = set()
    for mod in model.modules():
        if isinstance(mod, _NORM_TYPES):
            no_decay_ids.update(id(p) for p in mod.parameters(recurse=False))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if id(p) in no_decay_ids or p.ndim <= 1 or leaf == "bias" or any(s in leaf for s in _NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, train_cfg: Any, lr: float | None = None) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters (``train_cfg``: a TrainConfig or alike).

    ``lr`` overrides ``train_cfg.lr`` (e.g. ``pretrain.lr``).
    """
    groups = param_groups(model, float(train_cfg.weight_decay))
    if not groups:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=float(lr if lr is not None else train_cfg.lr))


class LRSchedule:
    """Learning-rate factor per optimizer step (a picklable callable for ``LambdaLR``).

    ``factor(s)`` for step s (0-based): during warm-up ``(s + 1) / warmup_steps``; then
    ``cosine``: ``0.5 * (1 + cos(pi * (s - warmup) / (total - warmup)))``; ``constant``: 1;
    ``step``: ``step_gamma ** ((s // steps_per_epoch) // step_size)``.
    """

    def __init__(self, kind: str, steps_per_epoch: int, epochs: int, warmup_epochs: int = 0,
                 step_size: int = 10, step_gamma: float = 0.1):
        if kind not in ("cosine", "constant", "step"):
            raise ValueError(f"unknown schedule {kind!r}: cosine, constant or step")
        self.kind = kind
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.total = self.steps_per_epoch * max(1, int(epochs))
        self.warmup = min(self.steps_per_epoch * int(warmup_epochs), self.total)
        self.step_size = max(1, int(step_size))
        self.step_gamma = float(step_gamma)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.step_gamma ** ((step // self.steps_per_epoch) // self.step_size)
        span = max(1, self.total - self.warmup)
        t = min(1.0, (step - self.warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: Any, steps_per_epoch: int,
                    epochs: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step ``LambdaLR`` following ``train_cfg.schedule`` (call ``.step()`` after each optimizer step).

    ``steps_per_epoch`` counts optimizer steps (batches / accum_steps, capped by
    ``max_steps_per_epoch``); ``epochs`` overrides ``train_cfg.epochs``.
    """
    sched = LRSchedule(train_cfg.schedule, steps_per_epoch, epochs if epochs is not None else train_cfg.epochs,
                       warmup_epochs=train_cfg.warmup_epochs, step_size=train_cfg.step_size,
                       step_gamma=train_cfg.step_gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, sched)
