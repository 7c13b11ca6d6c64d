"""Classifier (normalise -> R(2+1)D -> head) and Teacher (frozen enhancer -> classifier)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dlkdd.config import ModelConfig
from dlkdd.errors import CheckpointError
from dlkdd.models.classifier import Classifier, Teacher, arch_dict, build_classifier, classifier_from_arch
from dlkdd.models.r2plus1d import build_r2plus1d
from dlkdd.models.zerodce import ZeroDCE

SIZES = [(8, 56, 56), (16, 64, 48), (4, 32, 32)]


@pytest.fixture(scope="module")
def bert_clf():
    torch.manual_seed(0)
    return Classifier({"backbone": "r2plus1d_18", "num_classes": 5, "head": "bert", "mean": (0.1, 0.1, 0.1),
                       "std": (0.2, 0.2, 0.2)})


@pytest.fixture(scope="module")
def avg_clf():
    torch.manual_seed(0)
    return Classifier({"backbone": "r2plus1d_18", "num_classes": 5, "head": "avg"})


@pytest.mark.parametrize("thw", SIZES)
@pytest.mark.parametrize("which", ["bert_clf", "avg_clf"])
def test_shapes_for_several_sizes(request, which, thw):
    model = request.getfixturevalue(which).eval()
    x = torch.rand(1, 3, *thw)
    with torch.no_grad():
        logits, feat = model(x, return_features=True)
        again = model(x)
    assert logits.shape == (1, 5) and feat.shape == (1, 512)
    assert torch.equal(logits, again)  # eval mode is deterministic


def test_state_dict_is_clean(bert_clf):
    keys = list(bert_clf.state_dict())
    assert keys[:2] == ["mean", "std"]
    assert not any(k.startswith("backbone.fc") for k in keys)
    assert all(k.split(".")[0] in ("mean", "std", "backbone", "head") for k in keys)
    assert bert_clf.mean.shape == (1, 3, 1, 1, 1)
    assert not any(n in ("mean", "std") for n, _ in bert_clf.named_parameters())


def test_normalisation_is_applied(avg_clf):
    """Classifier(x) == head(backbone.features((x - mean) / std))."""
    model = Classifier({"backbone": "r2plus1d_18", "num_classes": 3, "head": "avg", "mean": (0.2, 0.3, 0.4),
                        "std": (0.5, 0.6, 0.7)}).eval()
    x = torch.rand(1, 3, 4, 32, 32)
    mean = torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.5, 0.6, 0.7]).view(1, 3, 1, 1, 1)
    with torch.no_grad():
        want = model.head(model.backbone.features((x - mean) / std))
        assert torch.allclose(model(x), want, atol=1e-6)


def test_gradients_reach_every_trainable_parameter(bert_clf):
    model = bert_clf.train()
    x = torch.rand(2, 3, 8, 32, 32)
    model.zero_grad()
    model(x).logsumexp(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    model.zero_grad()


def test_train_mode_token_masking_changes_outputs():
    torch.manual_seed(0)
    model = Classifier({"backbone": "r2plus1d_18", "num_classes": 4, "head": "bert", "token_keep": 0.5,
                        "dropouts": {"head": 0.0, "bert": 0.0}})
    x = torch.rand(2, 3, 24, 16, 16)  # T' = 3 tokens
    # no dropout anywhere, and BatchNorm in train mode is deterministic: any change between two
    # train-mode forwards of the same input comes from the random token masking
    model.train()
    with torch.no_grad():
        outs = [model(x) for _ in range(3)]
    assert any(not torch.allclose(o, outs[0], atol=1e-5) for o in outs[1:])


class _ScaleEnhancer(nn.Module):
    """A trainable-looking enhancer (one parameter) that must stay frozen in a Teacher."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(2.0))
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return (self.drop(x) * self.gain).clamp(0, 1)


@pytest.mark.parametrize("enhancer_cls", [ZeroDCE, _ScaleEnhancer])
def test_teacher_freezes_enhancer(enhancer_cls):
    torch.manual_seed(0)
    enh = enhancer_cls()
    before = {k: v.clone() for k, v in enh.state_dict().items()}
    clf = Classifier({"backbone": "r2plus1d_18", "num_classes": 3, "head": "bert"})
    teacher = Teacher(enh, clf)
    teacher.train()
    assert teacher.training and clf.training and not enh.training
    assert all(not p.requires_grad for p in enh.parameters())
    x = torch.rand(2, 3, 4, 24, 24)
    logits, feat = teacher(x, return_features=True)
    assert logits.shape == (2, 3) and feat.shape == (2, 512)
    logits.sum().backward()
    assert all(p.grad is None for p in enh.parameters())
    for name, p in clf.named_parameters():
        assert p.grad is not None, name
    trainable = {id(p) for p in teacher.parameters() if p.requires_grad}  # what an optimiser gets
    assert trainable == {id(p) for p in clf.parameters()}
    assert all(torch.equal(before[k], v) for k, v in enh.state_dict().items())
    # eval: the teacher is the classifier applied to the enhanced clip
    teacher.eval()
    with torch.no_grad():
        enhanced = enh.enhance(x) if hasattr(enh, "enhance") else enh(x)
        assert torch.allclose(teacher(x), clf(enhanced), atol=1e-6)


def test_arch_round_trip_and_build_classifier(tmp_path):
    cfg = ModelConfig(backbone="r2plus1d_18", head="avg", normalize="kinetics", head_dropout=0.5, token_keep=0.7)
    arch = arch_dict(cfg, 6)
    assert arch == {
        "backbone": "r2plus1d_18", "head": "avg", "num_classes": 6,
        "mean": list(cfg.norm_stats()[0]), "std": list(cfg.norm_stats()[1]), "normalize": "kinetics",
        "dropouts": {"head": 0.5, "bert": 0.1}, "token_keep": 0.7, "input": "rgb",
    }
    model = build_classifier(cfg, 6)
    rebuilt = classifier_from_arch(arch)
    rebuilt.load_state_dict(model.state_dict())  # same keys and shapes
    assert torch.allclose(rebuilt.mean.flatten(), torch.tensor(cfg.norm_stats()[0]))
    assert rebuilt.head.dropout.p == 0.5 and isinstance(rebuilt.head, type(model.head))
    bert = classifier_from_arch(arch_dict(ModelConfig(head="bert", token_keep=0.7), 6))
    assert bert.head.token_keep == 0.7


def test_build_classifier_loads_pretrained_trunk(tmp_path):
    torch.manual_seed(3)
    src = build_r2plus1d("r2plus1d_18", 400)
    p = tmp_path / "k400.pth"
    torch.save({"state_dict": src.state_dict()}, p)
    model = build_classifier(ModelConfig(pretrained=str(p)), 6)
    for k, v in src.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(model.backbone.state_dict()[k], v), k
    assert model.head.fc.out_features == 6
    # a dlkdd checkpoint (Classifier state dict under "model") initialises another classifier's trunk
    q = tmp_path / "pretrain.pt"
    torch.save({"schema_version": 1, "model": model.state_dict()}, q)
    other = build_classifier(ModelConfig(pretrained=str(q), head="avg"), 3)
    assert torch.equal(other.backbone.stem[0].weight, src.stem[0].weight)
    with pytest.raises(CheckpointError, match="r2plus1d_34"):
        build_classifier(ModelConfig(backbone="r2plus1d_34", pretrained=str(p)), 6)


def test_bad_input_shape(avg_clf):
    with pytest.raises(ValueError, match=r"\(B,3,T,H,W\)"):
        avg_clf(torch.rand(3, 8, 32, 32))
    assert math.isfinite(avg_clf.eval()(torch.rand(1, 3, 1, 16, 16)).sum().item())
