"""Loss functions of dlkdd, as pure functions (no state, no modules).

Shapes: logits ``(B, C)`` float, labels ``(B,)`` int64, embeddings ``(B, D)`` float.
Every function returns a 0-d tensor (or a dict of named 0-d tensors) that carries a
``grad_fn`` whenever an input requires grad.

- :func:`cross_entropy` - the task term ``CE(y, z) = -(1/B) sum_b log softmax(z_b)[y_b]``.
- :func:`kd_loss` - Hinton et al. 2015, "Distilling the Knowledge in a Neural Network":
  ``KL(p_t^tau || p_s^tau)`` with ``p^tau = softmax(z / tau)``, optionally x ``tau**2``;
  :func:`kd_loss_from_probs` takes ``p_t^tau`` itself (e.g. a mean over several teachers).
- :func:`kd_alpha`, :func:`distillation_loss` - DL-KDD (Chang, Chen & Tseng):
  ``L = CE(y, z_s) + alpha_t * KL(p_t^tau || p_s^tau)``, ``alpha_t = alpha_0 * gamma**epoch``
  (paper defaults alpha_0 = 1.5, gamma = 0.95, tau = 5).
- :func:`supcon_loss` - Khosla et al. 2020, "Supervised Contrastive Learning" (L_out).
- :func:`info_nce` - Chen et al. 2020, SimCLR's NT-Xent (symmetric InfoNCE).
- :func:`feature_loss` - a FitNets hint (Romero et al. 2015) on pooled features, L2-normalised:
  ``mean_b ||s_b/|s_b| - t_b/|t_b|||^2`` (cross-architecture feature distillation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy", "kd_loss", "kd_loss_from_probs", "kd_alpha", "distillation_loss", "supcon_loss", "info_nce",
           "feature_loss"]


def _check_kd(name: str, student: torch.Tensor, teacher: torch.Tensor, what: str, tau: float) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"{name}: student logits {tuple(student.shape)} and {what} {tuple(teacher.shape)} "
                         f"differ in shape")
    if tau <= 0:
        raise ValueError(f"{name}: tau must be > 0, got {tau}")


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Task term ``CE(y, z) = -(1/B) * sum_b log softmax(z_b)[y_b]`` (computed in float32).

    Args: logits ``(B, C)``, labels ``(B,)`` int64. Returns: a 0-d tensor.
    """
    return F.cross_entropy(logits.float(), labels)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float,
            tau2_scale: bool = False) -> torch.Tensor:
    """Knowledge-distillation term ``KL(p_t^tau || p_s^tau)``, mean over the batch.

    ``p_t^tau = softmax(z_t / tau)``, ``p_s^tau = softmax(z_s / tau)`` over the C classes;
    ``KL = (1/B) * sum_b sum_c p_t[b,c] * (log p_t[b,c] - log p_s[b,c])`` (``batchmean``, the
    true KL divergence per sample). With ``tau2_scale`` the result is multiplied by ``tau**2``,
    which keeps the gradient magnitude independent of tau (Hinton et al. 2015, section 2).
    The teacher logits are treated as constants (detached).

    Args: student_logits ``(B, C)``, teacher_logits ``(B, C)``, tau > 0.
    Returns: a 0-d tensor.
    """
    _check_kd("kd_loss", student_logits, teacher_logits, "teacher logits", tau)
    log_ps = F.log_softmax(student_logits.float() / tau, dim=-1)
    log_pt = F.log_softmax(teacher_logits.detach().float() / tau, dim=-1)
    kl = F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean")
    return kl * (tau * tau) if tau2_scale else kl


def kd_loss_from_probs(student_logits: torch.Tensor, teacher_probs: torch.Tensor, tau: float,
                       tau2_scale: bool = False) -> torch.Tensor:
    """:func:`kd_loss` with the teacher side given as probabilities ``p_t`` ``(B, C)`` already at ``tau``
    (e.g. the mean ``softmax(z_i / tau)`` of several teachers, :mod:`dlkdd.cache.ensemble`):
    ``KL = (1/B) sum_b sum_c p_t (log p_t - log p_s^tau)``, with ``0 log 0 = 0``; x ``tau**2`` with ``tau2_scale``.
    """
    _check_kd("kd_loss_from_probs", student_logits, teacher_probs, "teacher probabilities", tau)
    log_ps = F.log_softmax(student_logits.float() / tau, dim=-1)
    kl = F.kl_div(log_ps, teacher_probs.detach().float(), log_target=False, reduction="batchmean")
    return kl * (tau * tau) if tau2_scale else kl


def kd_alpha(alpha0: float, gamma: float, epoch: int) -> float:
    """DL-KDD's decaying distillation weight ``alpha_t = alpha_0 * gamma**epoch`` (epoch from 0)."""
    return float(alpha0) * float(gamma) ** int(epoch)


def distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None,
                      alpha: float, tau: float, tau2_scale: bool = False,
                      teacher_probs: torch.Tensor | None = None) -> dict[str, torch.Tensor | float]:
    """DL-KDD student objective ``L = CE(y, z_s) + alpha * KL(p_t^tau || p_s^tau)``.

    ``alpha`` is the already-decayed weight (:func:`kd_alpha`). Returns the named terms
    (timm style): ``loss`` (total), ``task_loss`` (CE), ``kd_loss`` (the KL term before alpha),
    and the floats ``alpha`` and ``tau`` used, for logging. ``teacher_probs`` (instead of
    ``teacher_logits``): the soft target at ``tau`` itself (:func:`kd_loss_from_probs`).
    """
    task = F.cross_entropy(student_logits.float(), labels)
    if teacher_probs is not None:
        kd = kd_loss_from_probs(student_logits, teacher_probs, tau, tau2_scale)
    else:
        kd = kd_loss(student_logits, teacher_logits, tau, tau2_scale)
    return {"loss": task + float(alpha) * kd, "task_loss": task, "kd_loss": kd,
            "alpha": float(alpha), "tau": float(tau)}


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss, the ``L_out`` form of Khosla et al. 2020 (eq. 2).

    For anchor i with positives ``P(i) = {p != i : y_p = y_i}`` and others ``A(i) = {a != i}``::

        l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / T) / sum_{a in A(i)} exp(z_i.z_a / T) )
        L   = mean of l_i over the anchors with |P(i)| > 0

    ``z``: ``(B, D)`` L2-normalised embeddings; ``labels``: ``(B,)``. If no anchor has a positive
    (every class appears once) the loss is ``0`` - a zero tensor still attached to ``z``'s graph,
    so ``backward()`` works and gives zero gradients, never NaN. (Khosla et al.'s reference code
    further scales by ``T / base_T``; that constant factor is left out here.)
    """
    if z.dim() != 2 or labels.shape != z.shape[:1]:
        raise ValueError(f"supcon_loss: expected z (B,D) and labels (B,), got {tuple(z.shape)} and "
                         f"{tuple(labels.shape)}")
    b = z.shape[0]
    zf = z.float()
    sim = zf @ zf.t() / temperature
    eye = torch.eye(b, dtype=torch.bool, device=z.device)
    # log-softmax over A(i) (every other sample): mask the diagonal out of the denominator
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    n_pos = pos.sum(1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return zf.sum() * 0.0
    # where pos is False log_prob may be -inf (diagonal): zero it before the product
    pos_log = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1)
    per_anchor = -pos_log[has_pos] / n_pos[has_pos]
    return per_anchor.mean()


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE / NT-Xent between two views (Chen et al. 2020, SimCLR, eq. 1).

    ``z1``, ``z2``: ``(B, D)`` embeddings of two views of the same B clips (L2-normalised here,
    so the similarity is the cosine). With ``z = [z1; z2]`` (2B rows) and ``s_ij = z_i.z_j / T``,
    anchor k's positive is its other view and the remaining ``2B - 2`` rows are negatives::

        l_k = -log( exp(s_{k,pos(k)}) / sum_{j != k} exp(s_kj) ),   L = mean over the 2B anchors
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"info_nce: expected two (B,D) tensors of the same shape, got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], 0).float(), dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Feature (hint) term between the student's projected feature and the teacher's stored one.

    ``student``: ``(B, D)`` the student's pooled feature after the learned projection onto the
    teacher's space (:class:`dlkdd.models.projector.FeatureProjector`); ``teacher``: ``(B, D)`` the
    teacher feature from the cache (detached here, a constant). With ``u = s / max(|s|, eps)`` and
    ``v = t / max(|t|, eps)`` (L2 norm over D)::

        L = (1/B) * sum_b ||u_b - v_b||^2  =  (1/B) * sum_b (2 - 2 cos(s_b, t_b)),   0 <= L <= 4

    Source: FitNets (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets", eq. 3) trains a
    student's "guided" layer through a learned regressor ``r`` to match a teacher's "hint" layer
    with ``1/2 ||u_h - r(v_g)||^2``; here the regressor is a linear map of pooled features and
    both sides are L2-normalised first. Normalising makes the term scale-free: teachers of other
    architectures (R(2+1)D's BERT feature, a pose network, a mean of several) store features of
    very different magnitudes, which would otherwise need a weight tuned per teacher, and the
    student cannot lower the loss by shrinking its projection. Rows where ``|t| = 0`` (a store
    without features for a clip, zero-filled) contribute ``|u|^2`` and should be masked out by the
    caller.
    """
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(f"feature_loss: expected student and teacher features (B,D) of one shape, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    u = F.normalize(student.float(), dim=1, eps=eps)
    v = F.normalize(teacher.detach().float(), dim=1, eps=eps)
    return (u - v).pow(2).sum(1).mean()
