"""The objectives of :func:`dlkdd.train.engine.train_one_epoch`: what each stage optimises.

Each is a small picklable callable ``(model, batch, epoch) -> (terms, logits)`` built on the
pure functions of :mod:`dlkdd.losses`; ``batch["video"]`` is ``(B,3,T,H,W)``, ``batch["label"]``
``(B,)`` and, for distillation, ``batch["teacher_logits"]`` ``(B,C)`` (or ``batch["teacher_probs"]``
``(B,C)``, a soft target already at tau, e.g. of several teachers); ``logits`` is ``(B,C)``.

- :class:`CrossEntropyObjective` - teacher / no-KD baseline: ``L = CE(y, z)``.
- :class:`DistillationObjective` - DL-KDD student: ``L = CE(y, z_s) + alpha_0 gamma^epoch KL(p_t^tau || p_s^tau)``.
- :class:`SupConObjective` - ActLumos teacher: ``L = CE(y, z) + w * SupCon(proj(feature), y)``;
  the model must accept ``return_features=True`` and return ``(logits, embedding (B,D))``.
- :class:`InfoNCEObjective` - ActLumos student pre-training: ``L = info_nce(z(view1), z(view2))`` on
  ``batch["video"]`` / ``batch["video2"]`` (no labels, no logits).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlkdd.losses import distillation_loss, info_nce, kd_alpha, supcon_loss

__all__ = ["logits_of", "CrossEntropyObjective", "DistillationObjective", "SupConObjective", "InfoNCEObjective"]


def logits_of(out: Any) -> torch.Tensor:
    """The logits of a model output: the tensor itself, the first of a ``(logits, features)`` pair,
    or ``out["logits"]``."""
    if isinstance(out, (tuple, list)):
        return out[0]
    if isinstance(out, dict):
        return out["logits"]
    return out


class CrossEntropyObjective:
    """``L = CE(y, z)``; terms ``{"loss"}``."""

    def __call__(self, model: nn.Module, batch: dict, epoch: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        logits = logits_of(model(batch["video"]))
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
        """Per-epoch scalars logged with the epoch (:func:`dlkdd.train.fit.fit` calls it)."""
        return {"alpha": self.alpha_at(epoch), "tau": self.tau}

    def __call__(self, model: nn.Module, batch: dict, epoch: int) -> tuple[dict[str, Any], torch.Tensor]:
        if "teacher_logits" not in batch and "teacher_probs" not in batch:
            raise KeyError("DistillationObjective: the batch has no 'teacher_logits' (use the logit-cache dataset)")
        logits = logits_of(model(batch["video"]))
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


class InfoNCEObjective:
    """``L = info_nce(z1, z2, temperature)`` on ``batch["video"]`` / ``batch["video2"]``; no logits."""

    def __init__(self, temperature: float = 0.1):
        self.temperature = float(temperature)

    def __call__(self, model: nn.Module, batch: dict, epoch: int) -> tuple[dict[str, torch.Tensor], None]:
        v1, v2 = batch["video"], batch["video2"]
        z = model(torch.cat([v1, v2], dim=0)).float()
        b = v1.shape[0]
        z1, z2 = z[:b], z[b:]
        loss = info_nce(z1, z2, self.temperature)
        with torch.no_grad():
            zn = F.normalize(z, dim=1)
            sim = zn @ zn.t()
            sim.fill_diagonal_(-2.0)
            target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
            pair_acc = 100.0 * (sim.argmax(1) == target).float().mean()
            pos_sim = (zn[:b] * zn[b:]).sum(1).mean()
        return {"loss": loss, "pos_sim": pos_sim, "pair_acc": pair_acc}, None
