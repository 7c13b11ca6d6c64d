"""The feature (hint) term and the student -> teacher feature projector, on hand-computed tensors."""
from __future__ import annotations

import pytest
import torch

from dlkdd.losses import feature_loss
from dlkdd.models.projector import FeatureProjector


def test_feature_loss_hand_computed():
    # row 0: u = (0.6, 0.8), v = (1, 0): |u - v|^2 = 0.16 + 0.64 = 0.8 (= 2 - 2 cos, cos = 0.6)
    # row 1: same direction (0, 2) vs (0, 5): 0.  Mean over the batch: 0.4
    s = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    torch.testing.assert_close(feature_loss(s, t), torch.tensor(0.4))
    # opposite directions: the maximum, 4
    torch.testing.assert_close(feature_loss(torch.tensor([[1.0, 1.0]]), torch.tensor([[-2.0, -2.0]])), torch.tensor(4.0))


def test_feature_loss_is_scale_free_and_equals_two_minus_two_cos():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    base = feature_loss(s, t)
    torch.testing.assert_close(feature_loss(7.0 * s, 0.01 * t), base)
    torch.testing.assert_close(base, (2 - 2 * torch.cosine_similarity(s, t, dim=1)).mean())


def test_feature_loss_gradient_reaches_student_only():
    s = torch.tensor([[3.0, 4.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0]], requires_grad=True)
    feature_loss(s, t).backward()
    assert t.grad is None
    # d/ds (2 - 2 s.t/|s||t|) = -2 (t/|t| - cos * s/|s|) / |s| = -2 ((1,0) - 0.6 (0.6,0.8)) / 5
    torch.testing.assert_close(s.grad, torch.tensor([[-2 * 0.64 / 5, 2 * 0.48 / 5]]))


def test_feature_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        feature_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_projector_maps_student_dim_to_teacher_dim_and_trains():
    torch.manual_seed(0)
    proj = FeatureProjector(1280, 512)
    s = torch.randn(3, 1280)
    out = proj(s)
    assert out.shape == (3, 512)
    feature_loss(out, torch.randn(3, 512)).backward()
    assert proj.proj.weight.grad is not None and proj.proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expects"):
        proj(torch.randn(3, 512))
