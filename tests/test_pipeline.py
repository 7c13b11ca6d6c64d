"""End-to-end pipeline through the CLI on a tiny synthetic dark set:
teacher -> cache-logits -> student (teacher file removed) / baseline -> evaluate -> predict."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dlkdd.cli import main

TINY = ["clip.frames=4", "clip.stride=2", "clip.size=32", "clip.resize=40", "train.epochs=2", "train.batch_size=4",
        "train.workers=0", "cache.views=3", "model.normalize=dataset", "model.backbone=r2plus1d_tiny"]


def _sets(extra=()):
    out = []
    for s in [*TINY, *extra]:
        out += ["--set", s]
    return out


def invoke(args, ok=True):
    r = CliRunner().invoke(main, ["--device", "cpu", *args], catch_exceptions=False)
    if ok:
        assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def run(module_dir):
    from dlkdd.data.synth import make_synthetic

    d = module_dir
    paths = make_synthetic(d / "data", classes=3, clips_per_class=4, frames=24, size=(48, 64), seed=1)
    cfg = paths["config"]
    sets = _sets([f"cache.dir={d / 'cache'}"])
    invoke(["teacher", "--config", cfg, *sets, "--out", str(d / "teacher"), "--no-progress"])
    r = invoke(["cache-logits", "--config", cfg, *sets, "--teacher", str(d / "teacher" / "teacher.pt"),
                "--path-file", str(d / "cache-path.txt"), "--no-progress"])
    store = Path((d / "cache-path.txt").read_text().strip())
    return {"dir": d, "cfg": cfg, "sets": sets, "store": store, "out": r.output}


def test_teacher_outputs(run):
    t = run["dir"] / "teacher"
    for f in ("teacher.pt", "last.pt", "best.pt", "metrics.json", "log.csv", "log.json", "curves.png"):
        assert (t / f).is_file(), f
    log = json.loads((t / "log.json").read_text())
    rows = log["epochs"] if isinstance(log, dict) else log
    assert [r["epoch"] for r in rows] == [0, 1]
    from dlkdd.train.checkpoint import load_checkpoint

    ck = load_checkpoint(t / "teacher.pt")
    assert ck["kind"] == "teacher" and ck["arch"]["enhancer"]["kind"] == "zerodce"
    assert any(k.startswith("enhancer.") for k in ck["model"])  # self-contained: enhancer weights inside
    assert ck["config"]["clip"]["frames"] == 4 and len(ck["classes"]) == 3


def test_cache_store_contents(run):
    from dlkdd.cache.store import LogitStore
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.config import load_config

    cfg = load_config(run["cfg"], TINY)
    m = manifest_from_config(cfg.data, "train")
    with LogitStore.open(run["store"]) as s:
        assert s.is_complete and s.keys == m.keys()
        logits, views = s.read_all()
        assert logits.shape == (len(m), 3, 3) and views.shape == (len(m), 3, 8)
        assert np.isfinite(logits).all()
        assert s.meta["manifest_sha256"] == m.sha256()
        assert s.meta["views_per_clip"] == 3 and s.meta["clip"]["frames"] == 4
    r = invoke(["cache", "verify", str(run["store"])])
    assert r.output.startswith("OK")
    r = invoke(["cache", "ls", str(run["store"].parent)])
    assert run["store"].name in r.output and "yes" in r.output


def test_cached_logits_equal_teacher_on_replayed_view(run):
    """The student's input replays exactly the clip the teacher scored: the teacher run on the
    replayed view reproduces the stored logits (float16 precision)."""
    from dlkdd.cache.reader import StoreRows
    from dlkdd.config import load_config
    from dlkdd.data.dataset import ClipDataset
    from dlkdd.data.views import StoredView
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.pipeline.evaluate import load_model

    cfg = load_config(run["cfg"], TINY)
    m = manifest_from_config(cfg.data, "train")
    ds = ClipDataset(m, cfg.clip, StoredView(StoreRows(m, run["store"]), seed=0))
    teacher, _ = load_model(run["dir"] / "teacher" / "teacher.pt")
    for i in (0, len(ds) - 1):
        for epoch in (0, 1, 2):
            ds.set_epoch(epoch)
            s = ds[i]
            with torch.inference_mode():
                z = teacher(s["video"][None]).float()[0]
            torch.testing.assert_close(z, s["teacher_logits"], atol=2e-2, rtol=1e-2)
            assert s["key"] == m[i].key


def test_second_run_reuses_store(run, caplog):
    before = sorted(p.name for p in run["store"].rglob("*"))
    with caplog.at_level(logging.INFO, logger="dlkdd"):
        r = invoke(["cache-logits", "--config", run["cfg"], *run["sets"], "--teacher",
                    str(run["dir"] / "teacher" / "teacher.pt"), "--no-progress"])
    assert r.output.strip().endswith(str(run["store"]))
    assert "reusing" in caplog.text
    assert sorted(p.name for p in run["store"].rglob("*")) == before


def test_student_trains_without_teacher_file(run, tmp_path):
    t = run["dir"] / "teacher" / "teacher.pt"
    hidden = t.with_suffix(".hidden")
    t.rename(hidden)
    try:
        invoke(["student", "--config", run["cfg"], *run["sets"], "--cache", str(run["store"]),
                "--out", str(tmp_path / "student"), "--no-progress", "--tau", "4"])
    finally:
        hidden.rename(t)
    from dlkdd.train.checkpoint import load_checkpoint

    ck = load_checkpoint(tmp_path / "student" / "student.pt")
    assert ck["kind"] == "student" and ck["arch"]["enhancer"] is None
    assert not any(k.startswith("enhancer.") for k in ck["model"])
    # the soft-target report, computed from the cache alone, is kept with the student
    from dlkdd.cache.inspect import soft_target_stats
    from dlkdd.config import load_config
    from dlkdd.data.manifest import manifest_from_config

    cfg = load_config(run["cfg"], list(run["sets"][1::2]))  # sets = ["--set", "k=v", ...]
    want = soft_target_stats(run["store"], manifest_from_config(cfg.data, "train"), taus=(4.0,))
    assert ck["extra"]["soft_targets"] == {k: v for k, v in want.items() if k != "path"}
    log = json.loads((tmp_path / "student" / "log.json").read_text())
    rows = log["epochs"] if isinstance(log, dict) else log
    assert [round(r["alpha"], 6) for r in rows] == [1.5, round(1.5 * 0.95, 6)]
    assert all(r["tau"] == 4.0 for r in rows)
    for term in ("train_loss", "train_task_loss", "train_kd_loss"):
        assert all(np.isfinite(r[term]) for r in rows), term

    # evaluate and predict need nothing but the checkpoint
    r = invoke(["evaluate", str(tmp_path / "student" / "student.pt"), "--config", run["cfg"], *run["sets"],
                "--json", str(tmp_path / "eval.json"), "--workers", "0", "--no-progress"])
    m = json.loads((tmp_path / "eval.json").read_text())
    assert set(m) >= {"top1", "top5", "n", "per_class", "confusion"}
    assert m["n"] == sum(map(sum, m["confusion"])) and len(m["per_class"]) == 3
    assert (tmp_path / "eval.png").is_file()
    video = str(next((run["dir"] / "data" / "clips").rglob("*.mp4")))
    r = invoke(["predict", str(tmp_path / "student" / "student.pt"), video, "--topk", "2", "--json"])
    res = json.loads(r.output)
    assert len(res) == 1 and len(res[0]["top"]) == 2
    assert abs(sum(t["prob"] for t in res[0]["top"])) <= 1.0 + 1e-6
    assert res[0]["windows"], "a 24-frame video is longer than 1.5 spans of a 4x2 clip: sliding windows"


def test_multiview_evaluate_from_lists(run, tmp_path):
    d = run["dir"] / "data"
    r = invoke(["evaluate", str(run["dir"] / "teacher" / "teacher.pt"), "--root", str(d / "clips"), "--list",
                str(d / "test.txt"), "--mapping", str(d / "mapping_table.txt"), "--clips", "2", "--crops", "3",
                "--workers", "0", "--no-progress", "--json", str(tmp_path / "e.json")])
    m = json.loads((tmp_path / "e.json").read_text())
    assert m["views"] == {"clips": 2, "crops": 3} and m["n"] == 3


def test_student_refuses_mismatched_cache(run, tmp_path):
    r = invoke(["student", "--config", run["cfg"], *run["sets"], "--set", "clip.frames=6", "--cache",
                str(run["store"]), "--out", str(tmp_path / "s")], ok=False)
    assert r.exit_code != 0
    assert "clip.frames differs" in r.output and "dlkdd cache-logits" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "s" / "last.pt").exists()


def test_baseline_no_kd(run, tmp_path):
    invoke(["student", "--config", run["cfg"], *run["sets"], "--set", "train.epochs=1", "--no-kd",
            "--out", str(tmp_path / "b"), "--no-progress"])
    from dlkdd.train.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "b" / "student.pt")["kind"] == "baseline"


def test_hdf5_cache_trains_student(run, tmp_path):
    h5 = tmp_path / "c.h5"
    invoke(["cache-logits", "--config", run["cfg"], *run["sets"], "--teacher",
            str(run["dir"] / "teacher" / "teacher.pt"), "--format", "hdf5", "--out", str(h5), "--no-progress"])
    from dlkdd.cache.store import LogitStore

    with LogitStore.open(h5) as a, LogitStore.open(run["store"]) as b:
        assert a.keys == b.keys
        la, va = a.read_all()
        lb, vb = b.read_all()
    np.testing.assert_array_equal(va, vb)  # same seeded views whatever the format
    np.testing.assert_allclose(la, lb, atol=1e-2)
    invoke(["student", "--config", run["cfg"], *run["sets"], "--set", "train.epochs=1", "--cache", str(h5),
            "--out", str(tmp_path / "s"), "--no-progress"])


def test_cache_features_option(run, tmp_path):
    out = tmp_path / "f.zarr"
    invoke(["cache-logits", "--config", run["cfg"], *run["sets"], "--teacher",
            str(run["dir"] / "teacher" / "teacher.pt"), "--features", "--views", "2", "--out", str(out),
            "--no-progress"])
    from dlkdd.cache.store import LogitStore

    from dlkdd.models.r2plus1d import feature_dim_of

    dim = feature_dim_of("r2plus1d_tiny")  # the head's clip feature: the trunk's width (TINY's network)
    assert dim == 128
    with LogitStore.open(out) as s:
        assert s.views_per_clip == 2 and s.feature_dim == dim
        f = s.read_features(0)
        assert f.shape == (2, dim) and np.isfinite(f).all() and np.abs(f).sum() > 0
