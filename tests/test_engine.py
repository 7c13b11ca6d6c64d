"""The training engine on tiny Conv3d models and synthetic clips: metrics, accumulation,
non-finite losses, evaluation on known logits, schedules, fit + exact resume."""
from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dlkdd.errors import TrainingError
from dlkdd.train.checkpoint import load_checkpoint
from dlkdd.config import TrainConfig
from dlkdd.train.engine import EpochRun, evaluate, steps_per_epoch, train_one_epoch
from dlkdd.train.fit import FitRun, Stage
from dlkdd.train.fit import fit
from dlkdd.train.objectives import CrossEntropyObjective, DistillationObjective
from dlkdd.train.optim import LRSchedule, build_optimizer, build_scheduler

C = 3
SHAPE = (3, 4, 8, 8)

QUIET = EpochRun("cpu", progress=False)


class TinyNet(nn.Module):
    """Conv3d -> ReLU -> global average -> dropout -> linear: (B,3,T,H,W) -> (B,C)."""

    def __init__(self, num_classes=C, dropout=0.2):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.norm = nn.LayerNorm(4)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        h = torch.relu(self.conv(x)).mean((2, 3, 4))
        return self.fc(self.drop(self.norm(h)))


class SynthClips(Dataset):
    """Clip i: label i % C, noise around a class-dependent mean; train mode adds per-epoch jitter
    (a generator seeded by (epoch, index)) and global-RNG noise (seeded worker RNG)."""

    def __init__(self, n=12, train=True, teacher=False):
        self.n, self.train, self.teacher, self.epoch = n, train, teacher, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        y = i % C
        g = torch.Generator().manual_seed(1000 + i)
        v = torch.randn(SHAPE, generator=g) * 0.5 + (y - 1)
        if self.train:
            v = v + 0.1 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(self.epoch * 7919 + i))
            v = v + 0.05 * torch.randn(SHAPE)
        item = {"video": v, "label": y, "key": f"c{y}/clip_{i}"}
        if self.teacher:
            item["teacher_logits"] = torch.nn.functional.one_hot(torch.tensor(y), C).float() * 3
        return item


class Cfg:
    lr = 1e-2
    weight_decay = 1e-2
    schedule = "cosine"
    warmup_epochs = 1
    step_size = 1
    step_gamma = 0.5
    epochs = 3


def _loader(ds, bs=4, shuffle=False):
    return DataLoader(ds, batch_size=bs, shuffle=shuffle)


# ----------------------------------------------------------------------------- train_one_epoch
def test_train_one_epoch_metrics_and_learning():
    torch.manual_seed(0)
    model = TinyNet(dropout=0.0)
    opt = build_optimizer(model, Cfg)
    ds = SynthClips(12)
    loss_fn = DistillationObjective(alpha=1.5, gamma=0.5, tau=2.0)
    first = train_one_epoch(model, _loader(SynthClips(12, teacher=True)), loss_fn, opt, None, 1, TrainConfig(), QUIET)
    assert set(first) >= {"loss", "task_loss", "kd_loss", "alpha", "tau", "top1", "top5", "clips", "clips_per_s",
                          "lr", "seconds"}
    assert first["clips"] == 12 and first["alpha"] == pytest.approx(0.75) and first["tau"] == 2.0
    assert first["top5"] == 100.0 and 0 <= first["top1"] <= 100
    assert first["loss"] == pytest.approx(first["task_loss"] + 0.75 * first["kd_loss"], rel=1e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    for e in range(10):
        m = train_one_epoch(model, _loader(ds, shuffle=True), CrossEntropyObjective(), opt, None, e, TrainConfig(),
                            QUIET)
    assert m["loss"] < first["task_loss"] and m["top1"] > 80.0
    # max_steps caps optimizer steps
    m = train_one_epoch(model, _loader(ds, bs=2), CrossEntropyObjective(), opt, None, 0,
                        TrainConfig(accum_steps=2, max_steps_per_epoch=2), EpochRun("cpu", progress=True))
    assert m["clips"] == 8 and m["steps"] == 2


def test_grad_accumulation_equals_full_batch():
    ds = SynthClips(8, train=False)
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), C))
    lin2 = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), C))
    lin2.load_state_dict(lin.state_dict())
    o1 = torch.optim.SGD(lin.parameters(), lr=0.5)
    o2 = torch.optim.SGD(lin2.parameters(), lr=0.5)
    m1 = train_one_epoch(lin, _loader(ds, 8), CrossEntropyObjective(), o1, None, 0, TrainConfig(), QUIET)
    m2 = train_one_epoch(lin2, _loader(ds, 4), CrossEntropyObjective(), o2, None, 0, TrainConfig(accum_steps=2), QUIET)
    assert m1["steps"] == 1 and m2["steps"] == 1
    assert m1["loss"] == pytest.approx(m2["loss"], rel=1e-6)
    # the per-step loss: one per optimizer step, the mean over its accumulation group
    assert len(m1["loss_steps"]) == len(m2["loss_steps"]) == 1
    assert m2["loss_steps"][0] == pytest.approx(m1["loss_steps"][0], rel=1e-6)
    lin3 = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), C))
    m3 = train_one_epoch(lin3, _loader(ds, 2), CrossEntropyObjective(), torch.optim.SGD(lin3.parameters(), lr=0.5),
                         None, 1, TrainConfig(), QUIET)
    assert m3["steps"] == len(m3["loss_steps"]) == 4
    assert sum(m3["loss_steps"]) / 4 == pytest.approx(m3["loss"], rel=1e-6)  # equal batches: mean of steps
    changed = False
    for a, b in zip(lin.parameters(), lin2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(lin.parameters(), nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), C)).parameters()):
        changed |= not torch.equal(a, b)
    assert changed


def test_non_finite_loss_raises_before_step(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    opt = build_optimizer(model, Cfg)
    sched = build_scheduler(opt, Cfg, steps_per_epoch=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ce = CrossEntropyObjective()

    def poisoned(model, batch, epoch):
        terms, logits = ce(model, batch, epoch)
        if "c2/clip_5" in batch["key"]:
            terms["loss"] = terms["loss"] * float("nan")
        return terms, logits

    # accum 2: the poisoned batch (index 1) arrives before the group's first optimizer step
    with pytest.raises(TrainingError) as e:
        train_one_epoch(model, _loader(SynthClips(12), 4), poisoned, opt, sched, 4, TrainConfig(accum_steps=2),
                        EpochRun("cpu", progress=False, last_good=tmp_path / "last.pt"))
    msg = str(e.value)
    assert "non-finite loss at epoch 4, step 1" in msg and "c2/clip_5" in msg and str(tmp_path / "last.pt") in msg
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert sched.last_epoch == 0 and not opt.state


# ----------------------------------------------------------------------------- evaluate
class LogitsIn(nn.Module):
    """The 'video' is the logits: (B,C,1,1,1) -> (B,C)."""

    def forward(self, x):
        return x.flatten(1)


def _logit_batch(logits, labels, keys):
    return {"video": torch.tensor(logits, dtype=torch.float32)[:, :, None, None, None],
            "label": torch.tensor(labels), "key": keys}


def test_evaluate_known_logits():
    # 6 classes; rows: predicted order given by the logits
    logits = [[5, 4, 3, 2, 1, 0],   # y=0 top1 hit
              [5, 4, 3, 2, 1, 0],   # y=1 top2
              [0, 1, 2, 3, 4, 5],   # y=5 top1 hit
              [0, 1, 2, 3, 4, 5],   # y=0 rank 6: top5 miss
              [1, 0.5, 0, 0, 9, 0]]  # y=1 rank 3
    labels = [0, 1, 5, 0, 1]
    batches = [_logit_batch(logits[:3], labels[:3], list("abc")), _logit_batch(logits[3:], labels[3:], list("de"))]
    r = evaluate(LogitsIn(), batches, "cpu", num_classes=6, progress=False)
    assert r["n"] == 5 and r["top1"] == pytest.approx(40.0) and r["top5"] == pytest.approx(80.0)
    conf = [[0] * 6 for _ in range(6)]
    conf[0][0] += 1; conf[1][0] += 1; conf[5][5] += 1; conf[0][5] += 1; conf[1][4] += 1  # noqa: E702
    assert r["confusion"] == conf
    # a class without clips has no accuracy (None), not 0%
    assert r["per_class"] == [50.0, 0.0, None, None, None, 100.0] and r["per_class_n"] == [2, 2, 0, 0, 0, 1]
    lg = torch.tensor(logits, dtype=torch.float32)
    ce = torch.nn.functional.cross_entropy(lg, torch.tensor(labels))
    assert r["loss"] == pytest.approx(float(ce), rel=1e-6)
    json.dumps(r)


def test_evaluate_aggregates_views_by_key_and_6d():
    # two views of key "a" (label 1): alone view 1 says class 0, the mean says class 1
    b1 = _logit_batch([[3, 0, 0], [0, 4, 0]], [1, 1], ["a", "a"])
    b2 = _logit_batch([[0, 0, 1], [0, 1, 0]], [2, 1], ["b", "c"])
    per_view = evaluate(LogitsIn(), [b1, b2], "cpu", 3, progress=False)
    assert per_view["n"] == 4 and per_view["top1"] == pytest.approx(75.0)
    # (B,V,...) videos: the V views are averaged
    six = {"video": torch.tensor([[[3.0, 0, 0], [0, 4, 0]]])[..., None, None, None], "label": torch.tensor([1]),
           "key": ["a"]}
    r = evaluate(LogitsIn(), [six], "cpu", 3, progress=False)
    assert r["n"] == 1 and r["top1"] == 100.0


# ----------------------------------------------------------------------------- optim
def test_schedules():
    cos = LRSchedule("cosine", steps_per_epoch=2, epochs=4, warmup_epochs=1)
    f = [cos(s) for s in range(8)]
    assert f[:2] == [0.5, 1.0] and f[2] == 1.0 and f[-1] > 0
    assert all(a >= b for a, b in zip(f[2:], f[3:]))
    assert f[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert [LRSchedule("constant", 3, 4)(s) for s in (0, 5, 11)] == [1.0, 1.0, 1.0]
    st = LRSchedule("step", steps_per_epoch=2, epochs=6, step_size=2, step_gamma=0.1)
    assert [st(s) for s in range(0, 12, 2)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, Cfg)
    sched = build_scheduler(opt, Cfg, steps_per_epoch=2)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(Cfg.lr * 0.5) and lrs[1] == pytest.approx(Cfg.lr)
    assert lrs[-1] < lrs[2]
    assert steps_per_epoch(10, 3) == 4 and steps_per_epoch(10, 3, max_steps=2) == 2


def test_optimizer_no_decay_groups():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(3, 4, 3)
            self.bn = nn.BatchNorm3d(4)
            self.emb = nn.Embedding(5, 4)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
            self.frozen = nn.Linear(2, 2)
            self.frozen.requires_grad_(False)

    m = M()
    opt = build_optimizer(m, Cfg)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decay == {id(m.conv.weight)}
    assert no_decay == {id(m.conv.bias), id(m.bn.weight), id(m.bn.bias), id(m.emb.weight), id(m.cls_token)}
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == Cfg.weight_decay


# ----------------------------------------------------------------------------- fit + resume
def _fit_cfg(epochs, workers=0):
    from dlkdd.config import Config

    return Config().replace(**{"seed": 7, "train.epochs": epochs, "train.batch_size": 4, "train.workers": workers,
                               "train.lr": Cfg.lr, "train.weight_decay": Cfg.weight_decay, "train.schedule": "cosine",
                               "train.warmup_epochs": 1, "train.amp": "fp32"})


class _KilledAt(DistillationObjective):
    """The objective of a run killed at the start of epoch ``stop`` (after ``last.pt`` of epoch stop-1)."""

    def __init__(self, stop, *a):
        super().__init__(*a)
        self.stop = stop

    def __call__(self, model, batch, epoch):
        if epoch == self.stop:
            raise KeyboardInterrupt
        return super().__call__(model, batch, epoch)


def _run(out_dir, epochs, workers, resume=None, killed_at=None):
    torch.manual_seed(123 if resume is None else 999)  # a resumed run must not depend on its own init
    np.random.seed(0)
    random.seed(0)
    model = TinyNet()
    obj = DistillationObjective(1.5, 0.9, 2.0) if killed_at is None else _KilledAt(killed_at, 1.5, 0.9, 2.0)
    if killed_at is not None:
        with pytest.raises(KeyboardInterrupt):
            fit(_fit_cfg(epochs, workers), model, SynthClips(10, teacher=True), SynthClips(6, train=False), obj,
                out_dir, Stage("student", {"num_classes": C}, ["a", "b", "c"]), FitRun(progress=False))
        return model, None
    return model, fit(_fit_cfg(epochs, workers), model, SynthClips(10, teacher=True), SynthClips(6, train=False), obj,
                      out_dir, Stage("student", {"num_classes": C}, ["a", "b", "c"]),
                      FitRun(resume=resume, progress=False))


def _strip(rows):
    return [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in rows]


@pytest.mark.parametrize("workers", [0, 2])
def test_fit_resume_is_exact(tmp_path, workers):
    straight, m_straight = _run(tmp_path / "a", 3, workers)
    _run(tmp_path / "b", 3, workers, killed_at=2)  # killed during epoch 2 of 3
    resumed, m_resumed = _run(tmp_path / "b", 3, workers, resume=tmp_path / "b")
    if workers == 0:  # resuming a finished run trains nothing and reports the same final metrics
        _, again = _run(tmp_path / "b", 3, workers, resume=tmp_path / "b")
        assert again["top1"] == m_resumed["top1"] and again["val"]["confusion"] == m_resumed["val"]["confusion"]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert _strip(m_straight["history"]) == _strip(m_resumed["history"])
    assert m_straight["best_top1"] == m_resumed["best_top1"] and m_resumed["val"]["n"] == 6

    out = tmp_path / "b"
    for name in ("last.pt", "best.pt", "log.csv", "log.json", "curves.png", "metrics.json"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "log.json").read_text())
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[2]["alpha"] == pytest.approx(1.5 * 0.9 ** 2) and "train_kd_loss" in rows[0] and "val_top1" in rows[0]
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "train_task_loss", "train_top1", "val_top1", "val_top5", "lr",
            "alpha"} <= set(header)
    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] == 2 and ck["kind"] == "student" and len(ck["history"]) == 3 and ck["classes"] == ["a", "b", "c"]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "metrics.json").read_text())["best_top1"] == m_resumed["best_top1"]
    best = load_checkpoint(out / "best.pt")  # the checkpoint of the best epoch, not of the last
    assert best["epoch"] == best["extra"]["best_epoch"] == m_resumed["best_epoch"]
    assert best["best_top1"] == m_resumed["best_top1"]


def test_atomic_link_keeps_the_linked_contents_when_the_source_is_replaced(tmp_path):
    from dlkdd.utils import atomic_link, atomic_write_text

    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    atomic_write_text(last, "epoch 0")
    atomic_write_text(best, "stale")
    assert atomic_link(last, best) is True
    assert best.read_text() == "epoch 0" and os.path.samefile(last, best)  # one file on disk, not two
    atomic_write_text(last, "epoch 1")  # the next epoch's last.pt replaces the name, not the bytes
    assert best.read_text() == "epoch 0" and last.read_text() == "epoch 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temporary left


def test_atomic_link_copies_where_links_are_refused(tmp_path, monkeypatch):
    from dlkdd.utils import atomic_link, atomic_write_text

    def refuse(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    atomic_write_text(tmp_path / "a", "x")
    assert atomic_link(tmp_path / "a", tmp_path / "b") is False
    assert (tmp_path / "b").read_text() == "x" and not os.path.samefile(tmp_path / "a", tmp_path / "b")


def test_fit_resume_refuses_other_kind(tmp_path):
    _run(tmp_path / "a", 1, 0)
    model = TinyNet()
    from dlkdd.errors import CheckpointError

    with pytest.raises(CheckpointError, match="kind is 'student', expected 'teacher'"):
        fit(_fit_cfg(2), model, SynthClips(4), None, CrossEntropyObjective(), tmp_path / "a",
            Stage("teacher", {}, ["a", "b", "c"]), FitRun(resume=tmp_path / "a", progress=False))


def test_bf16_autocast_on_cpu_when_asked():
    torch.manual_seed(0)
    model = TinyNet()
    opt = build_optimizer(model, Cfg)
    m = train_one_epoch(model, _loader(SynthClips(8)), CrossEntropyObjective(), opt, None, 0,
                        TrainConfig(amp="bf16", grad_clip=1.0), QUIET)
    assert math.isfinite(m["loss"]) and m["grad_norm"] > 0 and m["clips"] == 8
    assert all(p.dtype == torch.float32 for p in model.parameters())
    r = evaluate(model, _loader(SynthClips(8, train=False)), "cpu", C, amp="bf16", progress=False)
    assert r["n"] == 8
