"""Gamma correction, multi-scale Retinex, Identity, build_enhancer and enhancer specs."""
from __future__ import annotations

import pytest
import torch

from dlkdd.config import EnhancerConfig
from dlkdd.errors import CheckpointError
from dlkdd.models.enhancers import (
    GammaCorrection,
    Identity,
    MultiScaleRetinex,
    ZeroDCEEnhancer,
    build_enhancer,
    enhancer_from_spec,
    enhancer_spec,
    gaussian_blur,
    gaussian_kernel1d,
)
from dlkdd.models.zerodce import ZeroDCE

from conftest import shared_path


def _dark(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(shape, generator=g)
    return (0.02 + 0.1 * base).clamp(0, 1)


def test_gamma_formula_and_gradient():
    x = torch.tensor([0.0, 0.001, 0.125, 0.5, 1.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5).clone()
    y = GammaCorrection(3.0)(x)
    expected = x.clamp(min=1e-6) ** (1 / 3)
    torch.testing.assert_close(y, expected)
    assert y[0, 0, 0, 2].item() == pytest.approx(0.5, rel=1e-6)  # 0.125 ** (1/3)
    assert y[0, 0, 0, 4].item() == pytest.approx(1.0)
    x.requires_grad_(True)
    GammaCorrection(3.0)(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    clip = _dark((2, 3, 4, 6, 8))
    assert GammaCorrection(2.2)(clip).shape == clip.shape
    with pytest.raises(ValueError):
        GammaCorrection(0.0)


def test_gaussian_kernel_and_blur():
    k = gaussian_kernel1d(2.0)
    assert k.numel() == 13 and k.sum().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(k, k.flip(0))
    const = torch.full((1, 3, 5, 7), 0.3)  # smaller than the sigma-24 kernel: replicate padding
    torch.testing.assert_close(gaussian_blur(const, 24.0), const)
    x = torch.rand(1, 3, 20, 20)
    assert gaussian_blur(x, 2.0).std() < x.std()


def test_retinex_range_shape_brighter_and_layouts():
    msr = MultiScaleRetinex((2.0, 8.0, 24.0))
    clip = _dark((2, 3, 3, 24, 32))
    out = msr(clip)
    assert out.shape == clip.shape
    assert out.min() >= 0 and out.max() <= 1
    assert out.mean() > 2 * clip.mean()
    per_frame = torch.stack([msr(clip[:, :, t]) for t in range(3)], dim=2)
    torch.testing.assert_close(out, per_frame)
    img = clip[:, :, 0]
    assert msr(img).shape == img.shape
    # robust min/max: about 1% of values at 0 and 1% at 1 per frame
    frac_one = (out[0, :, 0] >= 1.0).float().mean().item()
    assert 0.0 < frac_one < 0.03
    # scale invariance of log-ratios (up to the small offset): a 2x brighter input looks alike
    torch.testing.assert_close(msr(img * 2), msr(img), atol=0.08, rtol=0)


def test_identity():
    x = torch.rand(1, 3, 2, 4, 4)
    assert Identity()(x) is x


def test_build_enhancer_kinds(tmp_path):
    assert isinstance(build_enhancer(EnhancerConfig(kind="gamma", gamma=2.0)), GammaCorrection)
    r = build_enhancer(EnhancerConfig(kind="retinex", retinex_sigmas=(1.0, 3.0)))
    assert isinstance(r, MultiScaleRetinex) and r.sigmas == (1.0, 3.0)
    assert isinstance(build_enhancer(EnhancerConfig(kind="none")), Identity)
    missing = tmp_path / "no_such_weights.pth"
    with pytest.raises(CheckpointError, match=r"no_such_weights.pth.*dlkdd enhancer.*enhancer.weights"):
        build_enhancer(EnhancerConfig(kind="zerodce", weights=str(missing)))


def test_build_official_zerodce_enhancer():
    path = shared_path("zerodce", "Epoch99.pth")
    enh = build_enhancer(EnhancerConfig(kind="zerodce", weights=str(path)))
    assert isinstance(enh, ZeroDCEEnhancer) and not enh.training
    net = ZeroDCE.from_official(path).eval()
    clip = _dark((1, 3, 2, 16, 16))
    with torch.no_grad():
        out = enh(clip)
        torch.testing.assert_close(out, net.enhance(clip))
    assert out.shape == clip.shape and out.mean() > clip.mean()


def test_spec_round_trip_with_state_dict():
    torch.manual_seed(0)
    src = ZeroDCEEnhancer().eval()
    spec = enhancer_spec(EnhancerConfig(kind="zerodce", weights="/somewhere/enhancer.pt"))
    assert spec == {"kind": "zerodce", "gamma": 3.0, "retinex_sigmas": [2.0, 8.0, 24.0],
                    "weights": "/somewhere/enhancer.pt"}
    dst = enhancer_from_spec(spec, src.state_dict())  # no file needed with a state dict
    x = _dark((1, 3, 2, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))
    with pytest.raises(CheckpointError, match="does not fit ZeroDCE"):
        enhancer_from_spec(spec, {"e_conv1.weight": torch.zeros(1)})
    g = enhancer_from_spec(enhancer_spec({"kind": "gamma", "gamma": 2.5}))
    assert isinstance(g, GammaCorrection) and g.gamma == 2.5
    with pytest.raises(ValueError, match="unknown enhancer kind"):
        enhancer_spec({"kind": "magic"})
