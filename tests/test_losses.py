"""dlkdd.losses against hand computations on tiny tensors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dlkdd.losses import distillation_loss, info_nce, kd_alpha, kd_loss, supcon_loss


def _manual_kl(zs, zt, tau):
    ps = torch.softmax(zs / tau, 1)
    pt = torch.softmax(zt / tau, 1)
    return (pt * (pt.log() - ps.log())).sum(1).mean()


def test_kd_zero_for_identical_logits():
    z = torch.randn(4, 6)
    assert kd_loss(z, z.clone(), tau=5.0).abs().item() < 1e-6


@pytest.mark.parametrize("tau", [1.0, 2.0, 5.0])
def test_kd_equals_manual_sum(tau):
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(5, 7, generator=g) * 3, torch.randn(5, 7, generator=g) * 3
    got = kd_loss(zs, zt, tau)
    assert got.item() > 0
    torch.testing.assert_close(got, _manual_kl(zs, zt, tau), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kd_loss(zs, zt, tau, tau2_scale=True), got * tau * tau, rtol=1e-5, atol=1e-6)


def test_kd_gradient_moves_student_toward_teacher():
    zt = torch.tensor([[4.0, 0.0, -2.0]])
    zs = torch.zeros(1, 3, requires_grad=True)
    kd_loss(zs, zt, tau=2.0).backward()
    # gradient of KL wrt z_s is (p_s - p_t)/tau: descent raises the teacher's top class
    assert zs.grad[0, 0] < 0 and zs.grad[0, 2] > 0
    torch.testing.assert_close(zs.grad, (torch.softmax(zs / 2, 1) - torch.softmax(zt / 2, 1)).detach() / 2)
    zs2 = (zs - 0.5 * zs.grad).detach()
    assert kd_loss(zs2, zt, 2.0) < kd_loss(zs.detach(), zt, 2.0)
    # teacher logits receive no gradient
    zt2 = zt.clone().requires_grad_(True)
    kd_loss(torch.zeros(1, 3, requires_grad=True), zt2, 2.0).backward()
    assert zt2.grad is None


def test_kd_shape_mismatch_raises():
    with pytest.raises(ValueError, match="differ in shape"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)


def test_kd_alpha_decay():
    assert kd_alpha(1.5, 0.95, 0) == pytest.approx(1.5)
    assert kd_alpha(1.5, 0.95, 1) == pytest.approx(1.425)
    assert kd_alpha(1.5, 0.95, 10) == pytest.approx(1.5 * 0.95 ** 10)
    assert kd_alpha(2.0, 1.0, 7) == 2.0


def test_distillation_loss_terms():
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(4, 5, generator=g, requires_grad=True)
    zt = torch.randn(4, 5, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    out = distillation_loss(zs, y, zt, alpha=0.7, tau=3.0)
    torch.testing.assert_close(out["task_loss"], F.cross_entropy(zs, y))
    torch.testing.assert_close(out["kd_loss"], _manual_kl(zs, zt, 3.0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss"], out["task_loss"] + 0.7 * out["kd_loss"])
    assert out["alpha"] == 0.7 and out["tau"] == 3.0
    out["loss"].backward()
    assert zs.grad is not None and torch.isfinite(zs.grad).all()


def _manual_supcon(z, y, t):
    b = len(y)
    losses = []
    for i in range(b):
        pos = [p for p in range(b) if p != i and y[p] == y[i]]
        if not pos:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / t) for a in range(b) if a != i)
        losses.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / t) / denom) for p in pos) / len(pos))
    return sum(losses) / len(losses)


def test_supcon_matches_loop():
    g = torch.Generator().manual_seed(2)
    z = F.normalize(torch.randn(6, 4, generator=g), dim=1)
    y = torch.tensor([0, 0, 1, 1, 1, 2])  # class 2 has no positive: excluded as an anchor
    got = supcon_loss(z, y, 0.5)
    assert got.item() == pytest.approx(_manual_supcon(z, y, 0.5), rel=1e-5)


def test_supcon_one_sample_per_class_is_zero_with_grad():
    z = F.normalize(torch.randn(4, 3), dim=1).requires_grad_(True)
    loss = supcon_loss(z, torch.arange(4), 0.1)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.isfinite(z.grad).all() and (z.grad == 0).all()


def test_supcon_lower_when_classes_cluster():
    y = torch.tensor([0, 0, 1, 1])
    clustered = F.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]]), dim=1)
    mixed = clustered[[0, 2, 1, 3]]
    assert supcon_loss(clustered, y, 0.1) < supcon_loss(mixed, y, 0.1)


def test_info_nce_matches_hand_computation():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    t = 0.2
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = 6
    total = 0.0
    for k in range(n):
        pos = (k + 3) % n
        denom = sum(math.exp(float(z[k] @ z[j]) / t) for j in range(n) if j != k)
        total += -math.log(math.exp(float(z[k] @ z[pos]) / t) / denom)
    assert info_nce(z1, z2, t).item() == pytest.approx(total / n, rel=1e-5)


def test_info_nce_lower_for_aligned_pairs():
    g = torch.Generator().manual_seed(4)
    z1 = torch.randn(8, 16, generator=g)
    aligned = info_nce(z1, z1 + 0.01 * torch.randn(8, 16, generator=g), 0.1)
    random = info_nce(z1, torch.randn(8, 16, generator=g), 0.1)
    assert aligned < random
    assert aligned.item() < 0.1
