"""ActLumos family: fusion weights, SupCon by hand, the dual-stream teacher, two-view InfoNCE
pre-training, and the whole chain (pretrain -> ActLumos teacher -> cache -> standard student)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from dlkdd.models.fusion import DynamicFusion, StaticFusion, build_fusion, tokens_of
from dlkdd.data.views import two_views
from dlkdd.models.pretrain_net import PretrainNet
from dlkdd.train.objectives import InfoNCEObjective
from dlkdd.models.actlumos import ActLumosTeacher, actlumos_arch, actlumos_from_arch, build_actlumos_teacher
from dlkdd.cli import main
from dlkdd.config import load_config
from dlkdd.train.objectives import SupConObjective

TINY = ["clip.frames=4", "clip.stride=2", "clip.size=16", "clip.resize=20", "train.epochs=1", "train.batch_size=4",
        "train.workers=0", "cache.views=2", "model.teacher=actlumos", "enhancer.kind=retinex",
        "pretrain.epochs=1", "actlumos.proj_dim=16", "pretrain.proj_dim=16", "model.backbone=r2plus1d_tiny"]


# ------------------------------------------------------------------------------------ fusion
def _maps(b=2, c=8, t=3, h=2, w=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, t, h, w, generator=g), torch.randn(b, c, t, h, w, generator=g) * 3 + 1]


def test_dynamic_fusion_weights_positive_sum_to_one_per_time_step():
    torch.manual_seed(0)
    fus = DynamicFusion(dim=8, streams=2, hidden=16)
    torch.nn.init.normal_(fus.score[2].weight, std=1.0)  # away from the zero (= static) start
    maps = _maps()
    fused, w = fus(maps)
    assert w.shape == (2, 3, 2) and fused.shape == maps[0].shape
    assert (w > 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3))
    # weights really vary per time step and per clip (dynamic), and are what was applied
    assert w[:, :, 0].std() > 1e-3
    manual = maps[0] * w[:, None, :, 0, None, None] + maps[1] * w[:, None, :, 1, None, None]
    torch.testing.assert_close(fused, manual)
    # decided from both streams: changing only stream 1 changes stream 0's weight
    w2 = fus.weights([maps[0], maps[1] * 0.0])
    assert not torch.allclose(w2[..., 0], w[..., 0])
    # trainable end to end
    fused.square().mean().backward()
    assert fus.score[0].weight.grad is not None and fus.score[0].weight.grad.abs().sum() > 0


def test_untrained_dynamic_fusion_is_static_average_and_static_has_no_parameters():
    maps = _maps(seed=1)
    fused_d, w_d = DynamicFusion(dim=8)(maps)
    fused_s, w_s = StaticFusion(dim=8)(maps)
    torch.testing.assert_close(w_d, torch.full((2, 3, 2), 0.5))
    torch.testing.assert_close(w_s, torch.full((2, 3, 2), 0.5))
    torch.testing.assert_close(fused_s, (maps[0] + maps[1]) / 2)
    torch.testing.assert_close(fused_d, fused_s)
    assert list(StaticFusion(dim=8).parameters()) == []
    assert tokens_of(maps[0]).shape == (2, 3, 8)
    with pytest.raises(ValueError, match="unknown fusion"):
        build_fusion("max")
    with pytest.raises(ValueError, match="one shape"):
        DynamicFusion(dim=8)([maps[0], maps[1][:, :, :2]])


# ------------------------------------------------------------------------------------ SupCon
class _FixedEmbedding(torch.nn.Module):
    """A 'model' returning given logits and embeddings (for the objective)."""

    def __init__(self, logits, emb):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())
        self.emb = torch.nn.Parameter(emb.clone())

    def forward(self, x, return_features=False):
        return (self.logits, self.emb) if return_features else self.logits


def _supcon_by_hand(z, labels, temp):
    """Khosla et al. 2020, eq. 2 (L_out), with explicit loops on normalised rows."""
    z = [[float(v) for v in row] for row in F.normalize(z, dim=1)]
    n = len(z)
    dot = lambda a, b: sum(x * y for x, y in zip(z[a], z[b]))  # noqa: E731
    losses = []
    for i in range(n):
        pos = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        denom = sum(math.exp(dot(i, a) / temp) for a in range(n) if a != i)
        losses.append(-sum(math.log(math.exp(dot(i, p) / temp) / denom) for p in pos) / len(pos))
    return sum(losses) / len(losses)


def test_supcon_objective_equals_hand_computation():
    z = torch.tensor([[1.0, 0.0, 0.5], [0.8, 0.3, 0.0], [0.0, 1.0, 0.2], [-0.4, 0.9, 0.1], [0.3, -0.2, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 2 has one sample: no positive, not an anchor
    logits = torch.tensor([[2.0, 0.1, -1.0], [0.5, 0.2, 0.0], [0.0, 1.0, 0.3], [-1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    obj = SupConObjective(weight=0.3, temperature=0.5)
    terms, out = obj(_FixedEmbedding(logits, z), {"video": torch.zeros(5, 3, 1, 1, 1), "label": labels}, 0)
    expected = _supcon_by_hand(z, labels.tolist(), 0.5)
    assert float(terms["supcon_loss"].detach()) == pytest.approx(expected, rel=1e-5)
    ce = F.cross_entropy(logits, labels)
    assert float(terms["loss"].detach()) == pytest.approx(float(ce) + 0.3 * expected, rel=1e-5)
    torch.testing.assert_close(out, logits)


def test_supcon_degenerates_to_zero_with_one_sample_per_class():
    z = torch.randn(4, 6)
    labels = torch.tensor([0, 1, 2, 3])
    model = _FixedEmbedding(torch.randn(4, 4), z)
    terms, _ = SupConObjective(weight=1.0, temperature=0.1)(model, {"video": torch.zeros(4, 3, 1, 1, 1),
                                                                     "label": labels}, 0)
    assert float(terms["supcon_loss"].detach()) == 0.0
    assert terms["loss"].item() == pytest.approx(terms["task_loss"].item())
    terms["loss"].backward()
    assert torch.isfinite(model.emb.grad).all() and float(model.emb.grad.abs().sum()) == 0.0
    assert float(model.logits.grad.abs().sum()) > 0


# ------------------------------------------------------------------------------------ teacher
def _cfg(*extra):
    return load_config(None, [*TINY, *extra])


def test_teacher_two_streams_shared_trunk_and_rebuild():
    torch.manual_seed(0)
    cfg = _cfg()
    model = build_actlumos_teacher(cfg, 3)
    x = torch.rand(2, 3, 4, 16, 16) * 0.1  # dark
    logits, z = model(x, return_features=True)
    assert logits.shape == (2, 3) and z.shape == (2, 16)
    dark, bright = model.stream_maps(x)
    assert dark.shape == bright.shape == (2, model.backbone.feature_dim, 1, 1, 1)
    assert not torch.allclose(dark, bright)  # the Retinex stream sees another input
    # the Retinex stream has its own (brighter) normalisation
    assert float(model.retinex_mean.mean()) > 5 * float(model.mean.mean())
    enh = model.enhance(x)
    assert enh.shape == x.shape and float(enh.mean()) > 3 * float(x.mean())
    # one trunk for both streams: gradient reaches it, and the fusion, head and projection
    (logits.sum() + z.sum()).backward()
    for name in ("backbone.stem.0.weight", "head.fc.weight", "proj.0.weight", "fusion.score.2.weight"):
        assert dict(model.named_parameters())[name].grad is not None, name
    # self-contained rebuild from arch
    arch = actlumos_arch(cfg, 3)
    assert arch["family"] == "actlumos" and arch["num_classes"] == 3 and arch["fusion"] == "dynamic"
    assert arch["proj_dim"] == 16 and arch["retinex_sigmas"] == [2.0, 8.0, 24.0] and arch["backbone"] == "r2plus1d_tiny"
    from dlkdd.models.build import model_from_checkpoint, teacher_arch

    assert teacher_arch(cfg, 3) == arch
    rebuilt = model_from_checkpoint({"arch": arch, "model": model.state_dict()})
    model.eval()
    torch.testing.assert_close(rebuilt(x), model(x))
    static = actlumos_from_arch(dict(arch, fusion="static"))
    assert not any(k.startswith("fusion.") for k in static.state_dict())
    assert torch.allclose(static.fuse(x)[1], torch.tensor(0.5))


# ------------------------------------------------------------------------------------ pretrain
def test_two_views_differ_and_replay():
    cfg = _cfg()
    v1, v2 = two_views(40, cfg.clip, np.random.default_rng(3), 48, 64)
    assert v1.start != v2.start and v1.frames == v2.frames == 4
    again = two_views(40, cfg.clip, np.random.default_rng(3), 48, 64)
    assert again == (v1, v2)
    for seed in range(20):  # start forced apart whenever the video allows it
        a, b = two_views(9, cfg.clip, np.random.default_rng(seed), 48, 64)
        assert a.start != b.start
    a, b = two_views(7, cfg.clip, np.random.default_rng(0), 48, 64)  # one possible start
    assert a.start == b.start == 0


def test_infonce_pretraining_loss_decreases_on_a_tiny_set():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    videos = torch.rand(4, 3, 6, 24, 24, generator=g) * 0.15  # 4 distinct dark "videos"

    def view(v, k):  # crop, flip, temporal offset: deterministic per k
        t0, y, x = k % 3, (5 * k) % 9, (3 * k) % 9
        c = v[:, t0:t0 + 4, y:y + 16, x:x + 16]
        return c.flip(-1) if k % 2 else c

    batch = {"video": torch.stack([view(v, 1) for v in videos]), "video2": torch.stack([view(v, 2) for v in videos]),
             "label": torch.zeros(4, dtype=torch.long)}
    model = PretrainNet("r2plus1d_18", (0.07,) * 3, (0.08,) * 3, proj_dim=16)
    obj = InfoNCEObjective(temperature=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        terms, logits = obj(model, batch, 0)
        assert logits is None and set(terms) == {"loss", "pos_sim", "pair_acc"}
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(float(terms["loss"]))
    assert math.isfinite(losses[0]) and losses[-1] < 0.7 * losses[0], losses
    assert float(terms["pair_acc"]) == 100.0


# ------------------------------------------------------------------------------------ end to end
def _invoke(args):
    r = CliRunner().invoke(main, ["--device", "cpu", *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


def test_pretrain_teacher_cache_student_end_to_end(tmp_path):
    """dlkdd pretrain -> dlkdd teacher (actlumos) -> cache-logits (with features) -> the
    standard dlkdd student, initialised from pretrain.pt, trained on that cache unchanged."""
    from dlkdd.cache.store import LogitStore
    from dlkdd.data.synth import make_synthetic
    from dlkdd.models.build import build_student
    from dlkdd.train.checkpoint import load_checkpoint

    paths = make_synthetic(tmp_path / "data", classes=3, clips_per_class=3, frames=12, size=(32, 48), seed=2)
    cfg_path = paths["config"]
    sets = []
    for s in [*TINY, f"cache.dir={tmp_path / 'cache'}"]:
        sets += ["--set", s]

    r = _invoke(["pretrain", "--config", cfg_path, *sets, "--out", str(tmp_path / "pre"), "--no-progress"])
    assert "InfoNCE loss" in r.output
    pre = load_checkpoint(tmp_path / "pre" / "pretrain.pt")
    assert pre["kind"] == "pretrain" and math.isfinite(pre["metrics"]["train"]["loss"])

    _invoke(["teacher", "--config", cfg_path, *sets, "--out", str(tmp_path / "teacher"), "--no-progress"])
    teach = load_checkpoint(tmp_path / "teacher" / "teacher.pt")
    assert teach["kind"] == "teacher" and teach["arch"]["family"] == "actlumos"
    assert math.isfinite(teach["history"][0]["train_supcon_loss"])

    _invoke(["cache-logits", "--config", cfg_path, *sets, "--teacher", str(tmp_path / "teacher" / "teacher.pt"),
             "--path-file", str(tmp_path / "cp.txt"), "--no-progress", "--features"])
    store_path = (tmp_path / "cp.txt").read_text().strip()
    with LogitStore.open(store_path) as s:
        assert s.is_complete and s.meta["teacher_kind"] == "actlumos" and s.feature_dim == 16
        logits, _ = s.read_all()
        assert logits.shape == (6, 2, 3) and np.isfinite(logits).all()

    # model.pretrained = pretrain.pt loads the trunk into the student
    pset = ["--set", f"model.pretrained={tmp_path / 'pre' / 'pretrain.pt'}"]
    student = build_student(load_config(cfg_path, [*TINY, f"model.pretrained={tmp_path / 'pre' / 'pretrain.pt'}"]), 3)
    for k, v in student.backbone.state_dict().items():
        torch.testing.assert_close(v, pre["model"][f"backbone.{k}"])

    r = _invoke(["student", "--config", cfg_path, *sets, *pset, "--cache", store_path,
                 "--out", str(tmp_path / "student"), "--no-progress"])
    st = load_checkpoint(tmp_path / "student" / "student.pt")
    assert st["kind"] == "student" and st["arch"]["family"] == "dlkdd" and st["arch"]["enhancer"] is None
    assert st["config"]["model"]["pretrained"].endswith("pretrain.pt")
    assert math.isfinite(st["history"][0]["train_kd_loss"])
    # the ActLumos teacher checkpoint is self-contained: evaluate rebuilds it from its arch
    _invoke(["evaluate", str(tmp_path / "teacher" / "teacher.pt"), "--config", cfg_path, *sets, "--workers", "0",
             "--no-progress", "--json", str(tmp_path / "eval.json")])
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["n"] == 3 and 0.0 <= ev["top1"] <= 100.0
