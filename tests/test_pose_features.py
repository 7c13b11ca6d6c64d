"""Keypoint normalisation (hand-computed example), flips, velocities, and the skeleton network's shapes and gradients."""
from __future__ import annotations

import pytest
import torch

from dlkdd.pose.features import FEATURES, FLIP_PERMUTATION, flip_keypoints, mask_of, normalize_keypoints, pose_features
from dlkdd.pose.skeleton import SkeletonNet, skeleton_arch, skeleton_from_arch


def _frame(shift=(0.0, 0.0), scale=1.0) -> torch.Tensor:
    """One skeleton: hips at (0.4, 0.6) and (0.6, 0.6), shoulders at (0.4, 0.3) and (0.6, 0.3) (torso 0.3),
    nose at (0.5, 0.1), every other joint on the hip centre; z = 0.1 everywhere, visibility 0.9."""
    kp = torch.zeros(33, 4)
    kp[:, :2] = torch.tensor([0.5, 0.6])
    kp[23, :2], kp[24, :2] = torch.tensor([0.4, 0.6]), torch.tensor([0.6, 0.6])
    kp[11, :2], kp[12, :2] = torch.tensor([0.4, 0.3]), torch.tensor([0.6, 0.3])
    kp[0, :2] = torch.tensor([0.5, 0.1])
    kp[:, 2], kp[:, 3] = 0.1, 0.9
    c = torch.tensor([0.5, 0.6])
    kp[:, :2] = c + (kp[:, :2] - c) * scale + torch.tensor(shift)
    return kp


def test_normalisation_hand_example():
    kp = _frame()[None]  # (T=1, 33, 4)
    pos, c, s = normalize_keypoints(kp, torch.ones(1))
    assert torch.allclose(c, torch.tensor([[0.5, 0.6, 0.1]]))
    assert torch.allclose(s, torch.tensor([0.3]))
    # nose: (0.5 - 0.5, 0.1 - 0.6, 0.1 - 0.1) / 0.3 = (0, -5/3, 0); left shoulder: (-1/3, -1, 0); left hip (-1/3, 0, 0)
    assert torch.allclose(pos[0, 0], torch.tensor([0.0, -5 / 3, 0.0]), atol=1e-6)
    assert torch.allclose(pos[0, 11], torch.tensor([-1 / 3, -1.0, 0.0]), atol=1e-6)
    assert torch.allclose(pos[0, 23], torch.tensor([-1 / 3, 0.0, 0.0]), atol=1e-6)


def test_normalisation_is_invariant_to_position_and_distance():
    a = pose_features(torch.stack([_frame(), _frame()]))
    b = pose_features(torch.stack([_frame((0.2, -0.1), 0.5), _frame((0.2, -0.1), 0.5)]))
    assert torch.allclose(a[:, :33 * 2], b[:, :33 * 2], atol=1e-5)


def test_features_layout_velocity_motion_and_mask():
    kp = torch.stack([_frame(), _frame((0.03, 0.0)), torch.zeros(33, 4), _frame()])
    f = pose_features(kp)
    assert f.shape == (4, FEATURES)
    assert torch.equal(mask_of(kp), torch.tensor([True, True, False, True]))
    pos, vel, move, m = f[:, :66], f[:, 66:132], f[:, 132:135], f[:, -1]
    assert torch.equal(m, torch.tensor([1.0, 1.0, 0.0, 1.0]))
    assert torch.allclose(pos[0, 0:2], torch.tensor([0.0, -5 / 3]), atol=1e-6)  # the nose, x and y only
    assert torch.allclose(move[1], torch.tensor([0.1, 0.0, 0.0]), atol=1e-5)  # 0.03 / torso 0.3
    assert vel[1].abs().max() < 1e-5  # the same body shape, moved
    assert f[2].abs().sum() == 0 and f[3, 66:].abs().sum() - 1 == 0  # no person; after a gap: no velocity
    assert f[0, 66:135].abs().sum() == 0  # first frame: no velocity


def test_random_similarity_keeps_shape_and_empty_frames():
    from dlkdd.pose.skeleton import random_similarity

    torch.manual_seed(0)
    kp = torch.stack([_frame(), torch.zeros(33, 4)])[None]
    out = random_similarity(kp, mask_of(kp))
    assert out[0, 1].abs().sum() == 0 and torch.equal(out[..., 2:], kp[..., 2:]) and not torch.equal(out, kp)


def test_flip_mirrors_and_swaps_sides():
    kp = torch.stack([_frame(), torch.zeros(33, 4)])
    kp[0, 15, :2] = torch.tensor([0.2, 0.5])  # left wrist far left
    fl = flip_keypoints(kp)
    assert torch.allclose(fl[0, 16, :2], torch.tensor([0.8, 0.5]))  # becomes the right wrist, mirrored
    assert fl[1].abs().sum() == 0  # no person stays no person
    assert sorted(FLIP_PERMUTATION) == list(range(33)) and torch.allclose(flip_keypoints(fl), kp)


@pytest.mark.parametrize("net", ["tcn", "gru"])
def test_skeleton_shapes_gradients_and_empty_windows(net):
    torch.manual_seed(0)
    m = SkeletonNet(6, net, width=16)
    x = torch.rand(3, 8, 33, 4)
    x[1] = 0  # a window without anybody
    x[2, :5] = 0
    y = m(x)
    assert y.shape == (3, 6) and torch.isfinite(y).all()
    y.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
    assert m.embed.weight.grad.abs().sum() > 0 if net == "tcn" else m.gru.weight_ih_l0.grad.abs().sum() > 0
    m.eval()
    multi = torch.rand(2, 3, 8, 33, 4)  # (B, V windows, T, 33, 4): logits averaged over V
    assert torch.allclose(m(multi), torch.stack([m(multi[:, v]) for v in range(3)]).mean(0), atol=1e-5)


def test_arch_round_trip():
    from dlkdd.config import PoseConfig

    arch = skeleton_arch(PoseConfig(net="gru", width=8), 5)
    m = skeleton_from_arch(arch)
    assert m.net == "gru" and m.fc.out_features == 5
    m.load_state_dict(SkeletonNet(5, "gru", 8).state_dict())
