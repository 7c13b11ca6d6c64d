"""soft_target_stats / `dlkdd cache stats`: the teacher's accuracy on the stored views and the
sharpness of softmax(z/tau), against hand computations."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dlkdd.cache.inspect import soft_target_stats
from dlkdd.cache.store import LogitStore, StoreLayout
from dlkdd.data.manifest import Entry, Manifest
from dlkdd.errors import CacheError

CLASSES = ["Drink", "Jump"]


def _store(path: Path, keys: list[str], logits: np.ndarray, classes=CLASSES, fmt: str = "zarr") -> Path:
    n, v, c = logits.shape
    with LogitStore.create(path, keys, v, c, {"classes": list(classes)}, layout=StoreLayout(dtype="float32"),
                           fmt=fmt) as s:
        s.write_many(range(n), logits, np.zeros((n, v, 8)))
        s.mark_complete()
    return path


def _manifest(keys: list[str], labels: list[int], classes=CLASSES) -> Manifest:
    return Manifest([Entry(k, f"/nowhere/{k}.mp4", y) for k, y in zip(keys, labels)], classes)


@pytest.mark.parametrize("fmt,ext", [("zarr", ".zarr"), ("hdf5", ".h5")])
def test_hand_computed(tmp_path, fmt, ext):
    ln3 = math.log(3.0)
    # clip a (label 0): views [ln3, 0] (right, p=.75) and [0, 2 ln3] (wrong, p1=.9); mean [ln3/2, ln3] -> wrong
    # clip b (label 1): views [0, ln3] (right) and [0, ln3] (right)
    z = np.array([[[ln3, 0.0], [0.0, 2 * ln3]], [[0.0, ln3], [0.0, ln3]]], dtype=np.float32)
    keys = ["Drink/a", "Jump/b"]
    path = _store(tmp_path / f"s{ext}", keys, z, fmt=fmt)
    # the store's row order need not be the manifest's: list the clips in the other order
    st = soft_target_stats(path, _manifest(keys[::-1], [1, 0]), taus=(1.0, 2.0))
    assert (st["clips"], st["views"], st["classes"]) == (2, 2, 2)
    assert st["view_top1"] == pytest.approx(75.0)
    assert st["clip_top1"] == pytest.approx(50.0)
    t1, t2 = st["taus"]
    assert t1["tau"] == 1.0 and t2["tau"] == 2.0
    # tau 1: max probs .75, .9, .75, .75; true-class probs .75, .1, .75, .75
    assert t1["top_prob"] == pytest.approx((0.75 + 0.9 + 0.75 + 0.75) / 4, abs=1e-6)
    assert t1["true_prob"] == pytest.approx((0.75 + 0.1 + 0.75 + 0.75) / 4, abs=1e-6)

    def h(p):
        return -(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2)

    assert t1["entropy_ratio"] == pytest.approx((3 * h(0.75) + h(0.9)) / 4, abs=1e-6)
    # tau 2: softmax([ln3, 0] / 2) = [sqrt3, 1] / (1 + sqrt3); [0, 2 ln3] / 2 -> .75
    r = math.sqrt(3) / (1 + math.sqrt(3))
    assert t2["top_prob"] == pytest.approx((3 * r + 0.75) / 4, abs=1e-6)
    assert t2["true_prob"] == pytest.approx((3 * r + 0.25) / 4, abs=1e-6)
    # a higher temperature flattens the targets
    assert t2["entropy_ratio"] > t1["entropy_ratio"]


def test_uniform_and_one_hot_extremes(tmp_path):
    keys = ["Drink/a", "Jump/b", "Pick/c"]
    classes = ["Drink", "Jump", "Pick"]
    flat = _store(tmp_path / "flat.zarr", keys, np.zeros((3, 4, 3), np.float32), classes)
    st = soft_target_stats(flat, _manifest(keys, [0, 1, 2], classes), taus=(1.0,))
    assert st["taus"][0]["entropy_ratio"] == pytest.approx(1.0)
    assert st["taus"][0]["top_prob"] == pytest.approx(1 / 3)
    sharp = np.full((3, 4, 3), -50.0, np.float32)
    for i in range(3):
        sharp[i, :, i] = 50.0
    st = soft_target_stats(_store(tmp_path / "sharp.zarr", keys, sharp, classes), _manifest(keys, [0, 1, 2], classes))
    assert st["view_top1"] == 100.0 and st["clip_top1"] == 100.0
    assert st["taus"][0]["entropy_ratio"] < 1e-6 and st["taus"][0]["true_prob"] == pytest.approx(1.0)


def test_refuses_other_classes_and_unknown_keys(tmp_path):
    keys = ["Drink/a", "Jump/b"]
    path = _store(tmp_path / "s.zarr", keys, np.zeros((2, 1, 2), np.float32))
    with pytest.raises(CacheError, match="3 classes"):
        soft_target_stats(path, _manifest(keys, [0, 1], ["Drink", "Jump", "Pick"]))
    with pytest.raises(CacheError, match="Jump/zzz"):
        soft_target_stats(path, _manifest(["Drink/a", "Jump/zzz"], [0, 1]))


def test_cli_on_arid6_train_keys(tmp_path, shared):
    from dlkdd.cli import main
    from dlkdd.config import load_config
    from dlkdd.data.manifest import manifest_from_config

    cfg = load_config("configs/arid6-mini.yaml")
    m = manifest_from_config(cfg.data, "train", check_files=False)
    z = np.zeros((len(m), 2, m.num_classes), np.float32)
    z[np.arange(len(m)), :, m.labels()] = 3.0  # a teacher that is always right
    path = _store(tmp_path / "t.zarr", m.keys(), z, m.classes)
    r = CliRunner().invoke(main, ["cache", "stats", str(path), "--config", "configs/arid6-mini.yaml", "--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.output)
    assert st["view_top1"] == 100.0 and [t["tau"] for t in st["taus"]] == [1.0, 5.0]  # 1 and kd.tau
    r = CliRunner().invoke(main, ["cache", "stats", str(path), "--config", "configs/arid6-mini.yaml", "--tau", "2"])
    assert r.exit_code == 0, r.output
    assert "teacher top-1 on the stored views: 100.0%" in r.output and "entropy / log C" in r.output
    r = CliRunner().invoke(main, ["cache", "stats", str(path), "--config", "configs/arid6-mini.yaml", "--tau", "0"])
    assert r.exit_code != 0 and "--tau" in r.output


def test_student_warnings_name_a_weak_teacher_and_flat_targets(tmp_path):
    from dlkdd.pipeline.student import soft_target_warnings

    keys = ["Drink/a", "Jump/b"]
    m = _manifest(keys, [0, 1])
    # right on every view and sharp at tau 1: no warning
    good = np.array([[[4.0, 0.0]], [[0.0, 4.0]]], np.float32)
    path = _store(tmp_path / "good.zarr", keys, good)
    assert soft_target_warnings(soft_target_stats(path, m, taus=(1.0,))) == []
    # the same logits at tau 50 are nearly uniform
    (w,) = soft_target_warnings(soft_target_stats(path, m, taus=(50.0,)))
    assert "nearly uniform" in w and "--tau" in w
    # wrong on every view, sharp: the teacher warning only
    (w,) = soft_target_warnings(soft_target_stats(_store(tmp_path / "bad.zarr", keys, good[::-1].copy()), m))
    assert "0.0% of the stored training views" in w


@pytest.mark.parametrize("tau", ["nan", "inf", "-1"])
def test_cli_refuses_a_non_finite_or_non_positive_tau(tmp_path, tau):
    """issue 25: `cache stats --tau nan` printed rows of nan."""
    from click.testing import CliRunner

    from dlkdd.cli import main

    r = CliRunner().invoke(main, ["cache", "stats", str(tmp_path / "none.zarr"), "--config", "configs/arid6-mini.yaml",
                                  "--tau", tau])
    assert r.exit_code != 0 and "--tau" in r.output and "finite" in r.output, r.output
