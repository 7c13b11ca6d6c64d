"""The generalisation levers of the evidence study: frame-difference input, photometric and temporal
jitter, synthetic-motion pre-training; and the per-step loss log. Tiny tensors, tiny runs."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dlkdd.cache.keying import clip_spec
from dlkdd.config import ClipConfig, Config, ConfigError, ModelConfig, load_config
from dlkdd.data.augment import jitter_rng, photometric_jitter
from dlkdd.data.dataset import ClipDataset
from dlkdd.data.manifest import Entry, Manifest
from dlkdd.data.motion import MOTIONS, MotionClips, render_motion
from dlkdd.data.views import random_view
from dlkdd.models.classifier import Classifier, arch_dict, classifier_from_arch
from dlkdd.train.logger import EpochLogger
from dlkdd.train.rundir import config_differences


# ------------------------------------------------------------------ frame differences
def test_diff_input_is_the_trunk_on_consecutive_differences():
    torch.manual_seed(0)
    m = Classifier({"backbone": "r2plus1d_18", "num_classes": 4, "head": "avg", "mean": (0.1, 0.2, 0.3),
                    "std": (0.5, 0.4, 0.3), "input": "diff"}).eval()
    x = torch.rand(2, 3, 5, 16, 16, requires_grad=True)
    out = m(x)
    z = (x - m.mean) / m.std
    want = m.head(m.backbone.features(z[:, :, 1:] - z[:, :, :-1]))
    assert out.shape == (2, 4)
    torch.testing.assert_close(out, want)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # a constant clip has no motion: every frame difference is zero, whatever the frames look like
    a = m(torch.full((1, 3, 5, 16, 16), 0.2))
    b = m(torch.full((1, 3, 5, 16, 16), 0.7))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=">= 2 frames"):
        m(torch.rand(1, 3, 1, 16, 16))


def test_diff_input_round_trips_through_arch_and_config():
    arch = arch_dict(ModelConfig(input="diff", head="avg"), 3)
    assert arch["input"] == "diff" and classifier_from_arch(arch).input == "diff"
    assert classifier_from_arch({k: v for k, v in arch.items() if k != "input"}).input == "rgb"  # older checkpoints
    with pytest.raises(ConfigError, match="model.input"):
        Config().replace(**{"model.input": "flow"})


# ------------------------------------------------------------------ photometric jitter
def test_photometric_jitter_formula_per_clip_and_off_at_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, 8, 8, generator=g) * 0.2
    x[:, 1] = x[:, 0]  # two equal frames stay equal: one transform for the whole clip
    assert photometric_jitter(x, jitter_rng(0, 0, 0), 0.0) is x
    y = photometric_jitter(x, jitter_rng(0, 0, 0), 0.5)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    torch.testing.assert_close(y[:, 1], y[:, 0])
    # the formula of dlkdd.data.augment, by hand from the same draws
    r = jitter_rng(0, 0, 0)
    gain = math.exp(r.uniform(-0.5, 0.5))
    ch = np.exp(r.uniform(-0.125, 0.125, size=3))
    c = math.exp(r.uniform(-0.25, 0.25))
    gam = math.exp(r.uniform(-0.25, 0.25))
    z = x * (gain * torch.tensor(ch, dtype=torch.float32).view(3, 1, 1, 1))
    want = (c * (z - z.mean()) + z.mean()).clamp(0, 1) ** gam
    torch.testing.assert_close(y, want)
    # reproducible per (seed, epoch, index, stream), different across epochs
    torch.testing.assert_close(photometric_jitter(x, jitter_rng(0, 0, 0), 0.5), y)
    assert not torch.allclose(photometric_jitter(x, jitter_rng(0, 1, 0), 0.5), y)


class _Replay:
    """A training policy that replays a fixed clip (as StoredView does from a cache of clips)."""

    seed = 3
    layout = "one"

    def __init__(self, augments):
        self.augments = augments

    def replay(self, index, epoch):
        torch.manual_seed(index)
        return {"video": torch.rand(3, 4, 8, 8) * 0.3, "view": torch.zeros(8, dtype=torch.float64)}


def test_clip_dataset_jitters_training_policies_only():
    man = Manifest([Entry("a/x_1_1", "/nonexistent.mp4", 0)], ["a"])
    plain = _Replay(augments=False).replay(0, 0)["video"]
    on = ClipDataset(man, ClipConfig(jitter=0.4), _Replay(augments=True))
    on.set_epoch(2)
    want = photometric_jitter(plain, jitter_rng(3, 2, 0, 0), 0.4)
    torch.testing.assert_close(on[0]["video"], want)
    assert not torch.allclose(on[0]["video"], plain)
    torch.testing.assert_close(ClipDataset(man, ClipConfig(jitter=0.4), _Replay(augments=False))[0]["video"], plain)
    torch.testing.assert_close(ClipDataset(man, ClipConfig(jitter=0.0), _Replay(augments=True))[0]["video"], plain)


# ------------------------------------------------------------------ temporal jitter
def test_stride_jitter_draws_strides_in_range_and_is_off_by_default():
    cfg = ClipConfig(frames=4, stride=2, size=16, resize=16, min_scale=1.0, stride_jitter=1)
    rng = np.random.default_rng(0)
    views = [random_view(40, cfg, rng, 32, 32) for _ in range(60)]
    assert {v.stride for v in views} == {1, 2, 3}
    assert all(v.start + (v.frames - 1) * v.stride < 40 for v in views)
    # off: the views of a config without the key, draw for draw
    a = [random_view(40, ClipConfig(frames=4, stride=2), np.random.default_rng(5)) for _ in range(3)]
    b = [random_view(40, ClipConfig(frames=4, stride=2, stride_jitter=0), np.random.default_rng(5)) for _ in range(3)]
    assert a == b
    # stores record it only when on: the names of stores made before it existed do not change
    assert "stride_jitter" not in clip_spec(ClipConfig()) and clip_spec(cfg)["stride_jitter"] == 1


def test_resume_treats_settings_a_checkpoint_predates_as_defaults():
    new = Config().to_dict()
    old = json.loads(json.dumps(new))
    del old["clip"]["jitter"], old["clip"]["stride_jitter"], old["model"]["input"]
    assert config_differences(old, new) == []
    changed = Config().replace(**{"clip.jitter": 0.4}).to_dict()
    assert config_differences(old, changed) == ["clip.jitter: 0.0 in the checkpoint, 0.4 now"]


# ------------------------------------------------------------------ synthetic motion
def _shift(clip: torch.Tensor) -> tuple[float, float]:
    """(dx, dy) from first to last frame: centroid of what appeared minus centroid of what vanished."""
    d = (clip[:, -1] - clip[:, 0]).sum(0)  # (S,S)
    ys, xs = torch.meshgrid(torch.arange(d.shape[0]), torch.arange(d.shape[1]), indexing="ij")
    pos, neg = d.clamp(min=0), (-d).clamp(min=0)

    def centroid(w):
        return float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())

    (px, py), (nx, ny) = centroid(pos), centroid(neg)
    return px - nx, py - ny


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_motion_clips_move_as_labelled(seed):
    rng = lambda: np.random.default_rng(seed)  # noqa: E731 - the same shapes for every motion
    right, left = _shift(render_motion(0, 8, 48, rng())), _shift(render_motion(1, 8, 48, rng()))
    down, up = _shift(render_motion(2, 8, 48, rng())), _shift(render_motion(3, 8, 48, rng()))
    assert right[0] > 2 and left[0] < -2 and down[1] > 2 and up[1] < -2
    bright = lambda c: int((c.sum(0) > c.sum(0).mean() * 2).sum())  # noqa: E731 - lit pixels of a frame
    grow, shrink = render_motion(6, 8, 48, rng()), render_motion(7, 8, 48, rng())
    assert bright(grow[:, -1]) > bright(grow[:, 0]) and bright(shrink[:, -1]) < bright(shrink[:, 0])


def test_motion_clips_dataset_is_dark_balanced_and_reproducible():
    cfg = ClipConfig(frames=4, size=24, resize=24)
    ds = MotionClips(16, cfg, seed=1)
    s = ds[9]
    assert s["video"].shape == (3, 4, 24, 24) and s["video"].dtype == torch.float32
    assert s["label"] == 9 % len(MOTIONS) and s["key"] == "motion-9"
    assert 0.0 <= float(s["video"].min()) and float(s["video"].max()) <= 1.0
    assert float(torch.stack([ds[i]["video"] for i in range(16)]).mean()) < 0.2  # dark, like ARID
    torch.testing.assert_close(ds[9]["video"], s["video"])
    ds.set_epoch(1)
    assert not torch.allclose(ds[9]["video"], s["video"])  # new clips every epoch
    fixed = MotionClips(16, cfg, seed=1, fixed=True)
    a = fixed[3]["video"]
    fixed.set_epoch(5)
    torch.testing.assert_close(fixed[3]["video"], a)
    with pytest.raises(ValueError, match="motion label"):
        render_motion(8, 4, 24, np.random.default_rng(0))


def test_motion_pretraining_writes_a_trunk_the_student_loads(tmp_path):
    from dlkdd.models.build import build_student
    from dlkdd.pipeline.pretrain import pretrain_student

    cfg = load_config(None, ["clip.frames=4", "clip.size=24", "clip.resize=24", "model.head=avg", "model.backbone=r2plus1d_tiny",
                             "pretrain.task=motion", "pretrain.epochs=1", "pretrain.motion_clips=8",
                             "train.batch_size=4", "train.workers=0", "train.amp=fp32"])
    res = pretrain_student(cfg, tmp_path / "pre", device="cpu", progress=False)
    assert res["train"]["clips"] == 8 and res["top1"] is not None  # validated on held-out synthetic clips
    from dlkdd.commands.pretrain import _summary

    # the command's summary prints percentages as every run summary does (utils.fmt_pct), n/a when missing
    assert f"train top-1 {res['train']['top1']:.2f}%  held-out synthetic top-1 {res['top1']:.2f}%" in \
        _summary(cfg, res, tmp_path / "pre" / "pretrain.pt")
    assert "held-out synthetic top-1 n/a" in _summary(cfg, dict(res, top1=None), tmp_path / "pre" / "pretrain.pt")
    ck = torch.load(tmp_path / "pre" / "pretrain.pt", map_location="cpu", weights_only=False)
    assert ck["kind"] == "pretrain" and ck["classes"] == list(MOTIONS) and ck["arch"]["task"] == "motion"
    student = build_student(cfg.replace(**{"model.pretrained": str(tmp_path / "pre" / "pretrain.pt")}), 6)
    for k, v in student.backbone.state_dict().items():
        torch.testing.assert_close(v, ck["model"][f"backbone.{k}"])
    assert student.head.fc.out_features == 6  # a fresh head for the real classes


# ------------------------------------------------------------------ per-step losses in the log
def test_logger_keeps_step_losses_in_json_and_plot_not_csv(tmp_path):
    lg = EpochLogger(tmp_path)
    lg.append({"epoch": 0, "train_loss": 1.5, "train_loss_steps": [2.0, 1.0]})
    lg.append({"epoch": 1, "train_loss": 0.9, "train_loss_steps": [1.0, 0.8], "val_top1": 50.0})
    lg.write()
    header = (tmp_path / "log.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,val_top1"
    assert json.loads((tmp_path / "log.json").read_text())[1]["train_loss_steps"] == [1.0, 0.8]
    assert (tmp_path / "curves.png").stat().st_size > 1000
