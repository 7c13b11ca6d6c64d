"""Ready-made loss functions for :func:`dlkdd.train.engine.train_one_epoch`.

Each is a small picklable callable ``(model, batch, epoch) -> (terms, logits)`` built on the
pure functions of :mod:`dlkdd.losses`; ``batch["video"]`` is ``(B,3,T,H,W)``, ``batch["label"]``
``(B,)`` and, for distillation, ``batch["teacher_logits"]`` ``(B,C)`` (or ``batch["teacher_probs"]``
``(B,C)``, a soft target already at tau, e.g. of several teachers); ``logits`` is ``(B,C)``.

- :class:`CrossEntropyObjective` - teacher / no-KD baseline: ``L = CE(y, z)``.
- :class:`DistillationObjective` - DL-KDD student: ``L = CE(y, z_s) + alpha_0 gamma^epoch KL(p_t^tau || p_s^tau)``.
- :class:`SupConObjective` - ActLumos teacher: ``L = CE(y, z) + w * SupCon(proj(feature), y)``;
  the model must accept ``return_features=True`` and return ``(logits, embedding (B,D))``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlkdd.losses import distillation_loss, kd_alpha, supcon_loss

__all__ = ["CrossEntropyObjective", "DistillationObjective", "SupConObjective"]


def _logits(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


class CrossEntropyObjective:
    """``L = CE(y, z)``; terms ``{"loss"}``."""

    def __call__(self, model: nn.Module, batch: dict, epoch: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        logits = _logits(model(batch["video"]))
        return {"loss": F.cross_entropy(logits.float(), batch["label"])}, logits


class DistillationObjective:
    """DL-KDD student loss with the cached teacher logits of the batch.

    Terms: ``loss``, ``task_loss`` (CE), ``kd_loss`` (KL), ``alpha`` (alpha_t of the epoch), ``tau``.
    """

    def __init__(self, alpha: float = 1.5, gamma: float = 0.95, tau: float = 5.0, tau2_scale: bool = False):
        self.alpha, self.gamma, self.tau, self.tau2_scale = float(alpha), float(gamma), float(tau), bool(tau2_scale)

    def alpha_at(self, epoch: int) -> float:
        return kd_alpha(self.alpha, self.gamma, epoch)

    def extras(self, epoch: int) -> dict[str, float]:
        """Per-epoch scalars for the log (``fit(epoch_extras=...)``)."""
        return {"alpha": self.alpha_at(epoch), "tau": self.tau}

    def __call__(self, model: nn.Module, batch: dict, epoch: int) -> tuple[dict[str, Any], torch.Tensor]:
        if "teacher_logits" not in batch and "teacher_probs" not in batch:
            raise KeyError("DistillationObjective: the batch has no 'teacher_logits' (use the logit-cache dataset)")
        logits = _logits(model(batch["video"]))
        # "teacher_probs": an ensemble of cached teachers' soft targets at tau (dlkdd/cache/ensemble.py)
        terms = distillation_loss(logits, batch["label"], batch.get("teacher_logits"), self.alpha_at(epoch), self.tau,
                                  self.tau2_scale, teacher_probs=batch.get("teacher_probs"))
        return terms, logits


class SupConObjective:
    """``L = CE(y, z) + weight * SupCon(normalize(embedding), y; temperature)`` (ActLumos, Khosla et al. 2020).

    Terms: ``loss``, ``task_loss``, ``supcon_loss``.
    """

    def __init__(self, weight: float = 0.1, temperature: float = 0.1):
        self.weight, self.temperature = float(weight), float(temperature)

    def __call__(self, model: nn.Module, batch: dict, epoch: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        logits, emb = model(batch["video"], return_features=True)
        task = F.cross_entropy(logits.float(), batch["label"])
        sc = supcon_loss(F.normalize(emb.float(), dim=1), batch["label"], self.temperature)
        return {"loss": task + self.weight * sc, "task_loss": task, "supcon_loss": sc}, logits
