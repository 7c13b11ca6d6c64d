"""ZeroDCE: golden conformance with the official implementation, layouts, checkpoint loading,
the four zero-reference losses on hand-computed cases, and a training step."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dlkdd.errors import CheckpointError
from dlkdd.models.zerodce import ZeroDCE, ZeroDCEEnhancer, load_zerodce_state_dict
from dlkdd.models.zerodce_losses import (
    color_constancy_loss,
    exposure_loss,
    illumination_smoothness_loss,
    spatial_consistency_loss,
    zero_reference_loss,
)

from conftest import shared_path


@pytest.fixture(scope="module")
def official():
    return ZeroDCE.from_official(shared_path("zerodce", "Epoch99.pth")).eval()


# --- golden -------------------------------------------------------------------------------

def test_golden_outputs_and_losses(official):
    g = np.load(shared_path("zerodce", "zerodce_golden_dev.npz"))
    x = torch.from_numpy(g["input_uint8"]).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        after_4, enhanced, r = official(x)
    assert r.shape == (4, 24, 120, 160)
    np.testing.assert_allclose(after_4.numpy(), g["enhanced_after_4"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(enhanced.numpy(), g["enhanced"], atol=1e-5, rtol=0)
    losses = zero_reference_loss(x, enhanced, r)
    for ours, key in (("tv", "loss_tv_x200"), ("spa", "loss_spa"), ("col", "loss_col_x5"), ("exp", "loss_exp_x10")):
        np.testing.assert_allclose(losses[ours].item(), float(g[key]), rtol=1e-5, atol=1e-6, err_msg=ours)
    total = sum(float(g[k]) for k in ("loss_tv_x200", "loss_spa", "loss_col_x5", "loss_exp_x10"))
    np.testing.assert_allclose(losses["loss"].item(), total, rtol=1e-5)
    # and the golden input really is dark; the official net brightens it
    assert enhanced.mean() > 2 * x.mean()


def test_official_weights_load_with_weights_only():
    path = shared_path("zerodce", "Epoch99.pth")
    sd = torch.load(path, map_location="cpu", weights_only=True)  # legacy non-zip pickle, plain tensors
    assert list(sd) == [f"e_conv{i}.{p}" for i in range(1, 8) for p in ("weight", "bias")]
    assert set(ZeroDCE().state_dict()) == set(sd)
    m = ZeroDCE.from_official(path)
    # the file's weights, with its subnormal floats set to 0 (they make CPU convolutions ~20x slower)
    tiny = torch.finfo(torch.float32).tiny
    sub = {k: (v != 0) & (v.abs() < tiny) for k, v in sd.items()}
    assert sum(int(s.sum()) for s in sub.values()) == 19266
    for k, v in m.state_dict().items():
        assert torch.equal(v, v.new_zeros(()).where(sub[k], sd[k])), k
    # ... which changes no output: a copy holding the raw weights (no load hook) enhances identically
    raw = ZeroDCE()
    with torch.no_grad():
        for k, p in raw.named_parameters():
            p.copy_(sd[k])
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 0.2
    with torch.no_grad():
        assert torch.equal(m.enhance(x), raw.enhance(x))


# --- layouts ------------------------------------------------------------------------------

def test_enhance_layouts_match_per_frame():
    torch.manual_seed(0)
    m = ZeroDCE().eval()
    clip = torch.rand(2, 3, 3, 12, 16) * 0.2  # (B,3,T,H,W)
    with torch.no_grad():
        out5 = m.enhance(clip)
        per_frame = torch.stack([torch.stack([m(clip[b, :, t][None])[1][0] for t in range(3)], dim=1)
                                 for b in range(2)])
        imgs = clip[:, :, 0]
        out4 = m.enhance(imgs)
    assert out5.shape == clip.shape
    torch.testing.assert_close(out5, per_frame, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out4, m(imgs)[1])
    with pytest.raises(ValueError, match="N,3,H,W"):
        m.enhance(torch.rand(3, 8, 8))


def test_enhancer_wrapper_same_state_dict_and_outputs():
    torch.manual_seed(1)
    net = ZeroDCE().eval()
    wrap = ZeroDCEEnhancer().eval()
    wrap.load_state_dict(net.state_dict())  # identical keys
    assert list(wrap.state_dict()) == list(net.state_dict())
    x = torch.rand(1, 3, 2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(wrap(x), net.enhance(x))
        assert wrap(x[:, :, 0]).shape == (1, 3, 8, 8)


def test_gradients_flow_to_every_parameter():
    torch.manual_seed(0)
    m = ZeroDCE()
    x = torch.rand(2, 3, 16, 16) * 0.1
    _, enhanced, r = m(x)
    zero_reference_loss(x, enhanced, r)["loss"].backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# --- checkpoint loading errors ------------------------------------------------------------

def test_load_missing_and_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nope.pth.*dlkdd enhancer"):
        ZeroDCE.from_official(tmp_path / "nope.pth")
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="text.pth"):
        ZeroDCE.from_official(text)
    sd = ZeroDCE().state_dict()
    del sd["e_conv3.bias"]
    sd["extra.weight"] = torch.zeros(1)
    p = tmp_path / "wrong_keys.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match=r"wrong_keys.pth.*missing keys \['e_conv3.bias'\].*extra.weight"):
        ZeroDCE.from_official(p)
    sd = ZeroDCE().state_dict()
    sd["e_conv7.weight"] = torch.zeros(12, 64, 3, 3)
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match="e_conv7.weight"):
        ZeroDCE.from_official(p)


def test_load_dlkdd_checkpoint_dicts(tmp_path):
    torch.manual_seed(3)
    m = ZeroDCE()
    p = tmp_path / "enhancer.pt"
    torch.save({"schema_version": 1, "kind": "enhancer", "model": m.state_dict(), "config": {}}, p)
    loaded = load_zerodce_state_dict(p)
    assert all(torch.equal(loaded[k], v) for k, v in m.state_dict().items())
    # a teacher checkpoint: its "model" is the classifier, "enhancer" the DCE-Net
    torch.save({"kind": "teacher", "model": {"fc.weight": torch.zeros(2, 2)}, "enhancer": m.state_dict()}, p)
    assert torch.equal(load_zerodce_state_dict(p)["e_conv1.weight"], m.e_conv1.weight)
    # a teacher whose model state dict holds the enhancer under "enhancer."
    teacher_sd = {f"enhancer.{k}": v for k, v in m.state_dict().items()}
    teacher_sd["classifier.fc.weight"] = torch.zeros(2, 2)
    torch.save({"kind": "teacher", "model": teacher_sd, "enhancer": None}, p)
    assert torch.equal(load_zerodce_state_dict(p)["e_conv7.bias"], m.e_conv7.bias)


# --- losses on hand-computed cases --------------------------------------------------------

def test_exposure_loss_constant_and_patches():
    for c in (0.0, 0.1, 0.6, 0.9):
        x = torch.full((2, 3, 32, 48), c)
        assert exposure_loss(x).item() == pytest.approx((c - 0.6) ** 2, rel=1e-4, abs=1e-6)
    # two 16x16 patches of luminance 0.2 and 1.0 -> mean of 0.16 and 0.16
    x = torch.zeros(1, 3, 16, 32)
    x[..., :16] = 0.2
    x[..., 16:] = 1.0
    assert exposure_loss(x).item() == pytest.approx(0.16, abs=1e-6)
    # the loss sees the channel mean: (0.9, 0.6, 0.3) averages to 0.6 -> 0
    x = torch.tensor([0.9, 0.6, 0.3]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    assert exposure_loss(x).item() == pytest.approx(0.0, abs=1e-7)


def test_color_constancy_grey_and_coloured():
    assert color_constancy_loss(torch.full((2, 3, 5, 7), 0.37)).item() == pytest.approx(0.0, abs=1e-9)
    r, g, b = 0.5, 0.3, 0.2
    x = torch.tensor([r, g, b]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    expected = np.sqrt(((r - g) ** 2) ** 2 + ((r - b) ** 2) ** 2 + ((g - b) ** 2) ** 2)
    assert color_constancy_loss(x).item() == pytest.approx(expected, rel=1e-5)
    # batch mean of per-image values
    xb = torch.cat([x, torch.full((1, 3, 4, 4), 0.5)])
    assert color_constancy_loss(xb).item() == pytest.approx(expected / 2, rel=1e-5)


def test_illumination_smoothness_constant_and_ramp():
    assert illumination_smoothness_loss(torch.full((3, 24, 6, 5), 0.4)).item() == 0.0
    # horizontal ramp of step s on one map: dx^2 = s^2 at H*(W-1) positions, dy = 0
    h, w, s = 4, 6, 0.1
    ramp = (torch.arange(w, dtype=torch.float32) * s).expand(h, w)
    r = torch.zeros(2, 24, h, w)
    r[0, 5] = ramp  # only image 0, map 5: the loss divides by the batch size N=2
    expected = 2 * (s * s * h * (w - 1) / (h * (w - 1))) / 2
    assert illumination_smoothness_loss(r).item() == pytest.approx(expected, rel=1e-5)


def test_spatial_consistency_hand_cases():
    x = torch.rand(2, 3, 16, 20)
    assert spatial_consistency_loss(x, x).item() == pytest.approx(0.0, abs=1e-12)
    # one 4x4 cell: enhanced luminance c against zeros -> each of the 4 zero-padded neighbour
    # differences is c, so E = 4 c^2
    c = 0.3
    a = torch.full((1, 3, 4, 4), c)
    b = torch.zeros(1, 3, 4, 4)
    assert spatial_consistency_loss(a, b).item() == pytest.approx(4 * c * c, rel=1e-5)
    # symmetric, and a global brightness offset is only penalised at the (zero-padded) border
    y = torch.rand(1, 3, 16, 16)
    assert spatial_consistency_loss(y, x[:1, :, :, :16]).item() == pytest.approx(
        spatial_consistency_loss(x[:1, :, :, :16], y).item(), rel=1e-6)
    big = torch.rand(1, 3, 64, 64)
    inner = spatial_consistency_loss(big + 0.1, big).item()
    assert 0 < inner < 4 * 0.01  # 0.01 at each border direction, averaged over 16x16 cells


# --- training -----------------------------------------------------------------------------

def test_zero_reference_training_decreases_loss():
    torch.manual_seed(0)
    m = ZeroDCE()
    x = torch.rand(2, 3, 16, 16) * 0.08  # a tiny dark batch
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        _, enhanced, r = m(x)
        loss = zero_reference_loss(x, enhanced, r)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 0.1)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses
    with torch.no_grad():
        assert m.enhance(x).mean() > x.mean()  # it learned to brighten
