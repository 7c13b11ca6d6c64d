"""The objectives of :func:`dlkdd.train.engine.train_one_epoch`: what each stage optimises.

Each is a small picklable callable ``(model, batch, epoch) -> (terms, logits)`` built on the
pure functions of :mod:`dlkdd.losses`; ``batch["video"]`` is ``(B,3,T,H,W)``, ``batch["label"]``
``(B,)`` and, for distillation, ``batch["teacher_logits"]`` ``(B,C)`` (or ``batch["teacher_probs"]``
``(B,C)``, a soft target already at tau, e.g. of several teachers); ``logits`` is ``(B,C)``.

- :class:`CrossEntropyObjective` - teacher / no-KD baseline: ``L = CE(y, z)``.
- :class:`TermsObjective` - ``L = sum_i w_i(epoch) * term_i``, a list of named, weighted
  :class:`LossTerm` (each wrapping a pure function of :mod:`dlkdd.losses`), every term logged by name.
- :func:`build_objective` - the one builder of the student's objective from ``cfg.kd``: the terms of
  :data:`KD_TERMS` (``task_loss`` CE, ``kd_loss`` KL and, with ``kd.feature_weight > 0``, ``feature_loss``
  on ``batch["teacher_features"]`` ``(B,D_t)``). :class:`DistillationObjective` is that
  objective from explicit numbers: ``L = CE(y, z_s) + alpha_0 gamma^epoch KL(p_t^tau || p_s^tau)``.
- :class:`SupConObjective` - ActLumos teacher: ``L = CE(y, z) + w * SupCon(proj(feature), y)``;
  the model must accept ``return_features=True`` and return ``(logits, embedding (B,D))``.
- :class:`InfoNCEObjective` - ActLumos student pre-training: ``L = info_nce(z(view1), z(view2))`` on
  ``batch["video"]`` / ``batch["video2"]`` (no labels, no logits).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dlkdd.errors import CacheError
from dlkdd.losses import cross_entropy, feature_loss, info_nce, kd_alpha, kd_loss, kd_loss_from_probs, supcon_loss

__all__ = ["logits_of", "LossTerm", "TermsObjective", "KD_TERMS", "build_objective", "task_term", "kd_term",
           "feature_term", "supcon_term", "CrossEntropyObjective", "DistillationObjective", "SupConObjective",
           "InfoNCEObjective"]


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


@dataclass(frozen=True)
class LossTerm:
    """One weighted term of a :class:`TermsObjective`: ``weight(epoch) * fn(outputs, batch)``.

    ``fn(outputs, batch) -> 0-d tensor``: ``outputs`` is ``{"logits": (B,C)}`` plus ``"features": (B,D)``
    when ``needs_features`` (the model is then called with ``return_features=True``); it wraps a pure
    function of :mod:`dlkdd.losses`. The unweighted value is logged as ``name``; with ``weight_name``
    the epoch's weight is logged too (the KD term's ``alpha``); ``logged``: constant scalars to log
    (the KD term's ``tau``). Build ``fn``/``weight`` from module-level functions (``functools.partial``)
    so that the objective pickles (DataLoader workers, DDP).
    """

    name: str
    fn: Callable[[dict, dict], torch.Tensor]
    weight: Callable[[int], float]
    weight_name: str = ""
    needs_features: bool = False
    logged: tuple[tuple[str, float], ...] = ()


class TermsObjective:
    """``L = sum_i weight_i(epoch) * term_i`` over a list of :class:`LossTerm`.

    Terms: ``loss`` (the sum), each term's ``name``, and its ``weight_name`` / ``logged`` scalars.
    """

    def __init__(self, terms: Sequence[LossTerm]):
        if not terms:
            raise ValueError("an objective needs at least one term")
        self.terms = list(terms)

    def extras(self, epoch: int) -> dict[str, float]:
        """Per-epoch scalars logged with the epoch (:func:`dlkdd.train.fit.fit` calls it)."""
        out: dict[str, float] = {}
        for t in self.terms:
            if t.weight_name:
                out[t.weight_name] = float(t.weight(epoch))
            out.update(t.logged)
        return out

    def __call__(self, model: nn.Module, batch: dict, epoch: int) -> tuple[dict[str, Any], torch.Tensor]:
        feats = any(t.needs_features for t in self.terms)
        out = model(batch["video"], return_features=True) if feats else model(batch["video"])
        outputs = {"logits": logits_of(out)}
        if feats:
            outputs["features"] = out[1]
        terms: dict[str, Any] = {}
        total = None
        for t in self.terms:
            value, w = t.fn(outputs, batch), float(t.weight(epoch))
            total = w * value if total is None else total + w * value
            terms[t.name] = value
            if t.weight_name:
                terms[t.weight_name] = w
            terms.update(t.logged)
        return {"loss": total, **terms}, outputs["logits"]


# ---- the terms: adapters from (outputs, batch) to the pure functions of dlkdd.losses
def _constant(value: float, epoch: int) -> float:
    return value


def _task_term(outputs: dict, batch: dict) -> torch.Tensor:
    return cross_entropy(outputs["logits"], batch["label"])


def _kd_term(outputs: dict, batch: dict, tau: float, tau2_scale: bool) -> torch.Tensor:
    # "teacher_probs": an ensemble of cached teachers' soft targets at tau (dlkdd/cache/ensemble.py)
    if batch.get("teacher_probs") is not None:
        return kd_loss_from_probs(outputs["logits"], batch["teacher_probs"], tau, tau2_scale)
    if batch.get("teacher_logits") is None:
        raise KeyError("the distillation objective: the batch has no 'teacher_logits' (use the logit-cache dataset)")
    return kd_loss(outputs["logits"], batch["teacher_logits"], tau, tau2_scale)


def _feature_term(outputs: dict, batch: dict) -> torch.Tensor:
    # outputs["features"]: the student's pooled feature already projected onto the teacher's space
    # (dlkdd.models.projector.ProjectedStudent); clips whose stored features are all zero are left out
    teacher = batch.get("teacher_features")
    if teacher is None:
        raise CacheError("the feature term (kd.feature_weight > 0): the batch has no 'teacher_features'; the "
                         "logit store must hold the teacher's features (re-run dlkdd cache-logits with --features)")
    student = outputs["features"]
    keep = teacher.detach().abs().amax(dim=1) > 0
    if not bool(keep.any()):
        return student.sum() * 0.0  # no clip with features: no signal, but the graph stays whole (DDP)
    return feature_loss(student[keep], teacher[keep])


def _supcon_term(outputs: dict, batch: dict, temperature: float) -> torch.Tensor:
    return supcon_loss(F.normalize(outputs["features"].float(), dim=1), batch["label"], temperature)


def task_term(weight: float = 1.0) -> LossTerm:
    """``task_loss = CE(y, z)`` (:func:`dlkdd.losses.cross_entropy`)."""
    return LossTerm("task_loss", _task_term, partial(_constant, float(weight)))


def kd_term(alpha: float, gamma: float, tau: float, tau2_scale: bool = False) -> LossTerm:
    """``kd_loss = KL(p_t^tau || p_s^tau)`` weighted by ``alpha_t = alpha gamma^epoch`` (logged ``alpha``, ``tau``)."""
    return LossTerm("kd_loss", partial(_kd_term, tau=float(tau), tau2_scale=bool(tau2_scale)),
                    partial(kd_alpha, float(alpha), float(gamma)), weight_name="alpha", logged=(("tau", float(tau)),))


def feature_term(weight: float) -> LossTerm:
    """``feature_loss = mean_b |u_b - v_b|^2`` of the L2-normalised projected student feature ``u`` and stored
    teacher feature ``v`` (:func:`dlkdd.losses.feature_loss`, FitNets), over the clips whose stored feature
    is not all zero; the model must return ``(logits, projected feature (B,D_t))``
    (:class:`dlkdd.models.projector.ProjectedStudent`)."""
    return LossTerm("feature_loss", _feature_term, partial(_constant, float(weight)), needs_features=True)


def supcon_term(weight: float, temperature: float) -> LossTerm:
    """``supcon_loss = SupCon(normalize(feature), y; temperature)`` (:func:`dlkdd.losses.supcon_loss`)."""
    return LossTerm("supcon_loss", partial(_supcon_term, temperature=float(temperature)),
                    partial(_constant, float(weight)), needs_features=True)


def _task_of(kd: Any) -> LossTerm:
    return task_term()


def _kd_of(kd: Any) -> LossTerm:
    return kd_term(kd.alpha, kd.gamma, kd.tau, kd.tau2_scale)


def _feature_of(kd: Any) -> LossTerm | None:
    weight = float(getattr(kd, "feature_weight", 0.0))
    return feature_term(weight) if weight > 0 else None


# The distillation terms built from ``cfg.kd``: name -> builder (KDConfig -> LossTerm, or None when off).
# A new term: a pure function in dlkdd/losses.py, an adapter and a builder above, one entry here (and its
# kd.* keys in dlkdd/config_sections.KDConfig).
KD_TERMS: dict[str, Callable[[Any], LossTerm | None]] = {
    "task": _task_of,
    "kd": _kd_of,
    "feature": _feature_of,
}


def build_objective(kd_cfg: Any) -> TermsObjective:
    """The student's objective from ``cfg.kd`` (:class:`dlkdd.config.KDConfig`): every term of
    :data:`KD_TERMS` that is on. The one builder of the distillation objective."""
    terms = [t for make in KD_TERMS.values() if (t := make(kd_cfg)) is not None]
    return TermsObjective(terms)


class DistillationObjective(TermsObjective):
    """DL-KDD student loss with the cached teacher logits of the batch: ``CE + alpha gamma^epoch KL``.

    Terms: ``loss``, ``task_loss`` (CE), ``kd_loss`` (KL), ``alpha`` (alpha_t of the epoch), ``tau``.
    :func:`build_objective` builds it from ``cfg.kd``.
    """

    def __init__(self, alpha: float = 1.5, gamma: float = 0.95, tau: float = 5.0, tau2_scale: bool = False):
        super().__init__([task_term(), kd_term(alpha, gamma, tau, tau2_scale)])
        self.alpha, self.gamma, self.tau, self.tau2_scale = float(alpha), float(gamma), float(tau), bool(tau2_scale)


class SupConObjective(TermsObjective):
    """``L = CE(y, z) + weight * SupCon(normalize(embedding), y; temperature)`` (ActLumos, Khosla et al. 2020).

    Terms: ``loss``, ``task_loss``, ``supcon_loss``.
    """

    def __init__(self, weight: float = 0.1, temperature: float = 0.1):
        super().__init__([task_term(), supcon_term(weight, temperature)])
        self.weight, self.temperature = float(weight), float(temperature)


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
