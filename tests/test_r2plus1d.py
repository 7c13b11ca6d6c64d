"""R(2+1)D: torchvision/IG65M key + shape conformance, golden logits, checkpoint loading."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import shared_path
from dlkdd.errors import CheckpointError
from dlkdd.models.r2plus1d import build_r2plus1d, load_pretrained

NETS = [  # (our name, reference name, classes)
    ("r2plus1d_18", "torchvision_r2plus1d_18", 400),
    ("r2plus1d_34", "torchvision_r2plus1d_34_layers", 400),
    ("r2plus1d_34_ig65m", "ig65m_r2plus1d_34_caffe2_midplanes", 359),
]


def _reference_keys() -> dict:
    return json.loads(shared_path("reference", "r2plus1d_reference_keys.json").read_text())


def deterministic_state_dict(keys: list) -> dict[str, torch.Tensor]:
    """Weights as ../shared/data/README.md (reference/) specifies: one generator seeded 0,
    keys walked in JSON order, one draw per tensor by the per-key rule."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, shape in keys:
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_mean"):
            sd[key] = torch.randn(shape, generator=g) * 0.1
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) >= 2:
            sd[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif key.endswith(".weight"):
            sd[key] = 1 + torch.randn(shape, generator=g) * 0.1
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.1
    return sd


@pytest.mark.parametrize("name,ref,classes", NETS)
def test_state_dict_keys_and_shapes_equal_reference(name, ref, classes):
    want = _reference_keys()[ref]
    got = [[k, list(v.shape)] for k, v in build_r2plus1d(name, classes).state_dict().items()]
    assert len(got) == len(want)
    for g, w in zip(got, want):  # in order
        assert g == w


def test_ig65m_uses_caffe2_bn_eps():
    m = build_r2plus1d("r2plus1d_34_ig65m", 359)
    eps = {mod.eps for mod in m.modules() if isinstance(mod, nn.BatchNorm3d)}
    assert eps == {1e-3}
    assert {mod.eps for mod in build_r2plus1d("r2plus1d_18", 4).modules() if isinstance(mod, nn.BatchNorm3d)} == {1e-5}


@pytest.mark.parametrize("name,ref,classes", [NETS[0], NETS[2]])
def test_golden_logits(name, ref, classes):
    golden = np.load(shared_path("reference", "r2plus1d_golden.npz"))
    model = build_r2plus1d(name, classes)
    model.load_state_dict(deterministic_state_dict(_reference_keys()[ref]))
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(golden["input"]))
    assert out.shape == (2, classes)
    np.testing.assert_allclose(out.numpy(), golden[ref], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def r18():
    return build_r2plus1d("r2plus1d_18", 7).eval()


@pytest.mark.parametrize("thw", [(8, 56, 56), (16, 64, 48), (4, 32, 32), (3, 17, 23)])
def test_features_and_logits_shapes(r18, thw):
    t, h, w = thw
    m = r18
    x = torch.rand(1, 3, t, h, w)
    with torch.no_grad():
        f = m.features(x)
        out = m(x)
    assert f.shape == (1, 512, math.ceil(t / 8), math.ceil(h / 16), math.ceil(w / 16))
    assert out.shape == (1, 7)
    with torch.no_grad():
        assert torch.allclose(m.fc(f.mean(dim=(2, 3, 4))), out, atol=1e-5)


def test_unknown_name():
    with pytest.raises(ValueError, match="r2plus1d_18"):
        build_r2plus1d("r3d_18", 4)


# ---------------------------------------------------------------- checkpoint loading

@pytest.fixture(scope="module")
def source():
    torch.manual_seed(1)
    m = build_r2plus1d("r2plus1d_18", 10)
    with torch.no_grad():  # non-default BN statistics so a round trip is a real check
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm3d):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 1.5)
    return m


def _assert_same(a: nn.Module, b: nn.Module, skip_prefix: str = "@") -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert [k for k in sa if not k.startswith(skip_prefix)] == [k for k in sb if not k.startswith(skip_prefix)]
    for k in sa:
        if not k.startswith(skip_prefix):
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "module_prefix"])
def test_load_round_trip(tmp_path, source, wrap):
    sd = source.state_dict()
    obj = {
        "bare": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd, "arch": "r2plus1d_18"},
        "module_prefix": {"state_dict": {"module." + k: v for k, v in sd.items()}},
    }[wrap]
    p = tmp_path / "ckpt.pth"
    torch.save(obj, p)
    fresh = build_r2plus1d("r2plus1d_18", 10)
    assert not torch.equal(fresh.stem[0].weight, source.stem[0].weight)
    load_pretrained(fresh, p)
    _assert_same(fresh, source)


def test_load_other_class_count_keeps_fresh_fc(tmp_path, source):
    p = tmp_path / "k400.pth"
    torch.save(source.state_dict(), p)
    fresh = build_r2plus1d("r2plus1d_18", 6)
    fc_before = fresh.fc.weight.clone()
    load_pretrained(fresh, p)
    assert fresh.fc.weight.shape == (6, 512)
    assert torch.equal(fresh.fc.weight, fc_before)
    _assert_same(fresh, source, skip_prefix="fc.")
    # num_classes= replaces the model's fc first
    other = build_r2plus1d("r2plus1d_18", 400)
    load_pretrained(other, p, num_classes=3)
    assert other.fc.out_features == 3
    _assert_same(other, source, skip_prefix="fc.")


def test_load_into_trunk_without_fc_and_from_dlkdd_checkpoint(tmp_path, source):
    # a Classifier-style trunk (fc = Identity) ignores the checkpoint's fc
    p = tmp_path / "k400.pth"
    torch.save(source.state_dict(), p)
    trunk = build_r2plus1d("r2plus1d_18", 10)
    trunk.fc = nn.Identity()
    load_pretrained(trunk, p)
    _assert_same(trunk, source, skip_prefix="fc.")
    # a dlkdd checkpoint: {"model": Classifier state dict with backbone.* + head.*}
    sd = {"mean": torch.zeros(1, 3, 1, 1, 1), "head.fc.weight": torch.zeros(6, 512)}
    sd.update({"backbone." + k: v for k, v in source.state_dict().items() if not k.startswith("fc.")})
    q = tmp_path / "student.pt"
    torch.save({"schema_version": 1, "kind": "pretrain", "model": sd, "epoch": 2}, q)
    fresh = build_r2plus1d("r2plus1d_18", 6)
    load_pretrained(fresh, q)
    _assert_same(fresh, source, skip_prefix="fc.")


def test_load_mismatch_lists_missing_unexpected_misshaped(tmp_path, source):
    sd = dict(source.state_dict())
    del sd["layer4.1.conv2.1.weight"]
    del sd["stem.0.weight"]
    sd["extra.weight"] = torch.zeros(3)
    sd["layer1.0.conv1.0.0.weight"] = torch.zeros(1, 64, 1, 3, 3)
    p = tmp_path / "bad.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointError) as ei:
        load_pretrained(build_r2plus1d("r2plus1d_18", 10), p)
    msg = str(ei.value)
    assert str(p) in msg
    assert "2 missing" in msg and "stem.0.weight" in msg and "layer4.1.conv2.1.weight" in msg
    assert "1 unexpected" in msg and "extra.weight" in msg
    assert "1 mis-shaped" in msg and "layer1.0.conv1.0.0.weight" in msg
    # another architecture: r2plus1d_18 weights into the IG65M R(2+1)D-34
    with pytest.raises(CheckpointError, match=r"missing.*\(\+\d+ more\)"):
        load_pretrained(build_r2plus1d("r2plus1d_34_ig65m", 10), tmp_path / "bad.pth")


def test_load_unreadable_or_missing_file(tmp_path):
    m = build_r2plus1d("r2plus1d_18", 4)
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(m, tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_pretrained(m, junk)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, empty)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_pretrained(m, empty)


def test_tiny_network_is_a_quarter_width_r2plus1d_10():
    from dlkdd.models.r2plus1d import feature_dim_of

    tiny, r18 = build_r2plus1d("r2plus1d_tiny", 5), build_r2plus1d("r2plus1d_18", 5)
    assert feature_dim_of("r2plus1d_tiny") == tiny.feature_dim == 128 and feature_dim_of("r2plus1d_18") == 512
    assert [len(getattr(tiny, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert tiny.stem[0].out_channels == 11 and tiny.layer4[0].conv2[0][-1].out_channels == 128
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(tiny) * 30 < n(r18)
    x = torch.randn(2, 3, 4, 32, 32)
    assert tiny.features(x).shape == (2, 128, 1, 2, 2) and tiny(x).shape == (2, 5)
    with pytest.raises(ValueError, match="unknown R"):
        feature_dim_of("r2plus1d_50")


def test_backbone_table_is_what_consumers_ask():
    """Every entry's spec matches the trunk it builds: feature width, temporal stride, fewest frames;
    an unknown name is a ConfigError listing the table (also from config validation)."""
    import math

    from dlkdd.config import config_from_dict
    from dlkdd.config_sections import ConfigError
    from dlkdd.models.backbones import BACKBONES, backbone_spec

    spec = backbone_spec("r2plus1d_tiny")
    trunk = spec.build(3)
    for t in (spec.min_frames, 9, 17):
        out = trunk.features(torch.randn(1, 3, t, 32, 32))
        assert out.shape[:3] == (1, spec.feature_dim, math.ceil(t / spec.temporal_stride))
    assert not [k for k in trunk.state_dict() if k.startswith("fc.")]  # no classifier reaches a state dict
    assert backbone_spec("r2plus1d_18").feature_dim == 512 and set(BACKBONES) >= {"r2plus1d_34_ig65m"}
    with pytest.raises(ConfigError, match="r2plus1d_18, r2plus1d_34"):
        backbone_spec("x3d_m")
    with pytest.raises(ConfigError, match="model.backbone.*r2plus1d_tiny"):
        config_from_dict({"model": {"backbone": "x3d_m"}})
