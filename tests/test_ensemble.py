"""Distillation from several cached teachers (dlkdd/cache/ensemble.py): the ensemble soft target,
refusal of mismatched caches, the loss on precomputed probabilities, `cache stats A B`, and a
student trained from two caches on a tiny synthetic set."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dlkdd.cache.ensemble import EnsembleRows, EnsembleStore, ensemble_soft_target, normalize_weights
from dlkdd.cache.reader import StoreRows
from dlkdd.data.dataset import ClipDataset
from dlkdd.data.views import StoredView
from dlkdd.cache.store import LogitStore, StoreLayout
from dlkdd.cli import main
from dlkdd.errors import CacheError
from dlkdd.losses import distillation_loss, kd_loss, kd_loss_from_probs


def test_ensemble_target_is_the_mean_softmax_by_hand():
    z = np.array([[[0.0, math.log(3.0)]], [[math.log(3.0), 0.0]]])  # (T=2, 1, C=2)
    np.testing.assert_allclose(ensemble_soft_target(z, 1.0), [[0.5, 0.5]])
    # weights 3:1 -> 0.75 * [.25, .75] + 0.25 * [.75, .25]
    np.testing.assert_allclose(ensemble_soft_target(z, 1.0, [3, 1]), [[0.375, 0.625]])
    # tau 2: softmax([0, ln3 / 2]) = [1, sqrt 3] / (1 + sqrt 3)
    r3 = math.sqrt(3.0)
    np.testing.assert_allclose(ensemble_soft_target(z[:1], 2.0), [[1 / (1 + r3), r3 / (1 + r3)]])
    t = ensemble_soft_target(torch.tensor(z, dtype=torch.float32), 1.0, [3, 1])
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.tensor([[0.375, 0.625]]))
    # one teacher: its own softmax
    one = np.array([[1.0, 2.0, 4.0]])
    np.testing.assert_allclose(ensemble_soft_target(one[None], 5.0)[0], torch.softmax(torch.tensor(one[0]) / 5, 0))
    with pytest.raises(ValueError):
        normalize_weights([1.0], 2)
    with pytest.raises(ValueError):
        normalize_weights([0.0, 0.0], 2)


def test_kd_loss_from_probs_equals_kd_loss():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g) * 3
    for tau, sc in ((1.0, False), (5.0, False), (4.0, True)):
        want = kd_loss(s, t, tau, sc)
        got = kd_loss_from_probs(s, torch.softmax(t / tau, -1), tau, sc)
        assert torch.allclose(got, want, atol=1e-6), (tau, sc)
    y = torch.tensor([0, 1, 2, 3, 0])
    a = distillation_loss(s, y, t, 1.5, 5.0)
    b = distillation_loss(s, y, None, 1.5, 5.0, teacher_probs=torch.softmax(t / 5.0, -1))
    assert torch.allclose(a["loss"], b["loss"], atol=1e-6)
    # a zero in the target is fine (0 log 0 = 0)
    p = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert torch.isfinite(kd_loss_from_probs(s[:1], p, 2.0))


def _store(path, keys, views, logits, classes=("a", "b", "c"), meta=None):
    s = LogitStore.create(path, keys, views.shape[1], len(classes),
                          {"classes": list(classes), "clip": {"frames": 4}, "view_seed": 0, **(meta or {})},
                          layout=StoreLayout(dtype="float32"))
    s.write_many(np.arange(len(keys)), logits, views)
    s.mark_complete()
    s.close()
    return path


def _views(n, v, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, v, 8))


def test_ensemble_store_joins_by_key_and_refuses_mismatches(tmp_path):
    keys = ["A/A_1_1", "A/A_1_2", "B/B_1_1"]
    rng = np.random.default_rng(1)
    za, zb = rng.normal(size=(3, 2, 3)), rng.normal(size=(3, 2, 3))
    v = _views(3, 2)
    a = _store(tmp_path / "a.zarr", keys, v, za)
    order = [2, 0, 1]  # the second store lists the clips in another order
    b = _store(tmp_path / "b.zarr", [keys[i] for i in order], v[order], zb[order])
    with EnsembleStore([a, b], weights=[1, 3]) as e:
        assert e.keys == keys and e.num_teachers == 2
        z, views = e.read(1)
        np.testing.assert_allclose(z, np.stack([za[1], zb[1]]), rtol=1e-6)
        np.testing.assert_array_equal(views, v[1])
        want = 0.25 * torch.softmax(torch.tensor(za[1]) / 2, -1) + 0.75 * torch.softmax(torch.tensor(zb[1]) / 2, -1)
        np.testing.assert_allclose(e.target(1, 2.0), want.numpy(), rtol=1e-5)
        zz, _ = e.read_many([0, 2])
        assert zz.shape == (2, 2, 2, 3)
    c = _store(tmp_path / "c.zarr", keys[:2] + ["B/B_9_1"], v, zb)
    with pytest.raises(CacheError, match=r"hold different clips: 1 only in the first \['B/B_1_1'\]"):
        EnsembleStore([a, c])
    v2 = v.copy()
    v2[2, 1, 0] += 0.5
    d = _store(tmp_path / "d.zarr", keys, v2, zb)
    with pytest.raises(CacheError, match="stored other views for 1 clip.*first: B/B_1_1, view 1"):
        EnsembleStore([a, d])
    e3 = _store(tmp_path / "e.zarr", keys, _views(3, 3), rng.normal(size=(3, 3, 3)))
    with pytest.raises(CacheError, match="2 vs 3 views per clip"):
        EnsembleStore([a, e3])
    f = _store(tmp_path / "f.zarr", keys, v, zb, classes=("a", "b", "x"))
    with pytest.raises(CacheError, match="different classes"):
        EnsembleStore([a, f])
    g = _store(tmp_path / "g.zarr", keys, v, zb, meta={"view_seed": 7})
    with pytest.raises(CacheError, match="another view_seed: 0 vs 7"):
        EnsembleStore([a, g])


TINY = ["clip.frames=4", "clip.stride=2", "clip.size=32", "clip.resize=40", "train.epochs=1", "train.batch_size=4",
        "train.workers=0", "cache.views=2", "model.head=avg", "model.backbone=r2plus1d_tiny"]


def _teacher_cache(path, cfg, manifest, logit_seed):
    """A complete cache for ``manifest`` as `cache-logits` would write it (views drawn for the real
    clips), with made-up teacher logits: the student only ever reads the store."""
    from dlkdd.cache.keying import view_spec_from_config
    from dlkdd.data.video import probe
    from dlkdd.data.views import random_view

    spec = view_spec_from_config(cfg)
    V, C = spec["views_per_clip"], manifest.num_classes
    rng = np.random.default_rng(0)  # the same views for every teacher
    views = np.zeros((len(manifest), V, 8))
    for i, e in enumerate(manifest):
        info = probe(e.path)
        for j in range(V):
            views[i, j] = random_view(info.num_frames, cfg.clip, rng, info.height, info.width).to_array()
    logits = np.random.default_rng(logit_seed).normal(size=(len(manifest), V, C)) * 2
    logits[np.arange(len(manifest)), :, manifest.labels()] += 2.0  # a teacher that is mostly right
    meta = {"classes": list(manifest.classes), "manifest_sha256": manifest.sha256(), "clip": spec["clip"],
            "view_seed": spec["view_seed"], "teacher_sha256": f"{logit_seed:064x}", "skipped_keys": []}
    s = LogitStore.create(path, manifest.keys(), V, C, meta, layout=StoreLayout(dtype="float32"))
    s.write_many(np.arange(len(manifest)), logits, views)
    s.mark_complete()
    s.close()
    return path


@pytest.fixture(scope="module")
def tiny(module_dir):
    from dlkdd.config import load_config
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.data.synth import make_synthetic

    paths = make_synthetic(module_dir / "data", classes=2, clips_per_class=3, frames=8, size=(32, 48), seed=4)
    cfg = load_config(paths["config"], TINY)
    train = manifest_from_config(cfg.data, "train")
    a = _teacher_cache(module_dir / "t1.zarr", cfg, train, 1)
    b = _teacher_cache(module_dir / "t2.zarr", cfg, train, 2)
    return {"dir": module_dir, "cfg_path": paths["config"], "cfg": cfg, "train": train, "a": a, "b": b}


def test_ensemble_dataset_replays_the_single_cache_view(tiny):
    train, clip = tiny["train"], tiny["cfg"].clip
    single = ClipDataset(train, clip, StoredView(StoreRows(train, tiny["a"]), seed=3))
    one = ClipDataset(train, clip, StoredView(EnsembleRows(train, [tiny["a"]], tau=5.0), seed=3))
    two = ClipDataset(train, clip, StoredView(EnsembleRows(train, [tiny["a"], tiny["b"]], tau=5.0), seed=3))
    for ds in (single, one, two):
        ds.set_epoch(1)
    for i in range(len(single)):
        s, o, t = single[i], one[i], two[i]
        assert torch.equal(s["video"], o["video"]) and torch.equal(s["view"], t["view"])
        assert torch.allclose(o["teacher_probs"], torch.softmax(s["teacher_logits"] / 5.0, -1), atol=1e-6)
        with LogitStore.open(tiny["b"]) as sb:
            zb = torch.from_numpy(sb.read_key(s["key"])[0]).float()
        v = single.policy.choice(i, 1)
        want = 0.5 * torch.softmax(s["teacher_logits"] / 5.0, -1) + 0.5 * torch.softmax(zb[v] / 5.0, -1)
        assert torch.allclose(t["teacher_probs"], want, atol=1e-6)
    import pickle  # DataLoader workers get a pickled copy (stores reopen lazily)

    copy = pickle.loads(pickle.dumps(two))
    assert torch.equal(copy[1]["teacher_probs"], two[1]["teacher_probs"])


def test_cache_stats_reports_the_ensemble(tiny):
    args = ["cache", "stats", str(tiny["a"]), str(tiny["b"]), "--config", tiny["cfg_path"], *sum((["--set", s] for s in TINY), [])]
    r = CliRunner().invoke(main, args + ["--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.output)
    assert len(st["teachers"]) == 2 and st["weights"] == [0.5, 0.5]
    assert 0 <= st["view_top1"] <= 100 and [t["tau"] for t in st["taus"]] == [1.0, 5.0]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "ensemble (weighted mean softmax)" in r.output
    r = CliRunner().invoke(main, args + ["--cache-weight", "1"])
    assert r.exit_code == 2 and "1 teacher weights for 2 caches" in r.output


def test_student_from_two_caches(tiny):
    d = tiny["dir"]
    sets = sum((["--set", s] for s in TINY), [])
    out = d / "student-ens"
    r = CliRunner().invoke(main, ["--device", "cpu", "student", "--config", tiny["cfg_path"], *sets, "--cache",
                                  str(tiny["a"]), "--cache", str(tiny["b"]), "--cache-weight", "2",
                                  "--cache-weight", "1", "--out", str(out), "--no-progress"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert (out / "student.pt").is_file() and (out / "predictions.jsonl").is_file()
    from dlkdd.train.checkpoint import load_checkpoint

    ck = load_checkpoint(out / "student.pt")
    assert ck["kind"] == "student" and ck["extra"]["cache"] == [str(tiny["a"]), str(tiny["b"])]
    assert ck["extra"]["cache_weights"] == pytest.approx([2 / 3, 1 / 3])
    rows = json.loads((out / "log.json").read_text())
    rows = rows["epochs"] if isinstance(rows, dict) else rows
    assert math.isfinite(rows[0]["train_kd_loss"]) and rows[0]["train_kd_loss"] > 0
    # a weight count that does not fit is refused before training
    r = CliRunner().invoke(main, ["--device", "cpu", "student", "--config", tiny["cfg_path"], *sets, "--cache",
                                  str(tiny["a"]), "--cache", str(tiny["b"]), "--cache-weight", "1", "--out",
                                  str(d / "x")])
    assert r.exit_code == 2 and "1 weights for 2 caches" in r.output


def test_student_refuses_caches_of_other_views(tiny, tmp_path):
    from dlkdd.config import load_config

    cfg = load_config(tiny["cfg_path"], TINY)
    other = tmp_path / "t3.zarr"
    _teacher_cache(other, cfg, tiny["train"], 3)
    with LogitStore.open(other, "r+") as s:  # one stored view moved: the teachers scored different clips
        z, v = s.read(0)
        v[0, 0] = (v[0, 0] + 1) % 3
        s.write(0, z, v)
    sets = sum((["--set", s] for s in TINY), [])
    r = CliRunner().invoke(main, ["--device", "cpu", "student", "--config", tiny["cfg_path"], *sets, "--cache",
                                  str(tiny["a"]), "--cache", str(other), "--out", str(tmp_path / "s")])
    assert r.exit_code == 1 and "stored other views for 1 clip" in r.output


def test_ensemble_refuses_the_same_teacher_twice(tmp_path):
    """issue 25: the same teacher (one store twice, or two stores of one checkpoint) is no ensemble."""
    keys = ["A/A_1_1", "B/B_1_1"]
    logits, views = np.random.default_rng(2).normal(size=(2, 2, 3)), _views(2, 2)
    one = {"teacher_sha256": "ab" * 32}
    a = _store(tmp_path / "a.zarr", keys, views, logits, meta=one)
    b = _store(tmp_path / "b.h5", keys, views, logits, meta=one)
    c = _store(tmp_path / "c.zarr", keys, views, logits, meta={"teacher_sha256": "cd" * 32})
    with pytest.raises(CacheError, match="same teacher"):
        EnsembleStore([a, b])
    with pytest.raises(CacheError, match="same"):
        EnsembleStore([c, tmp_path / "." / "c.zarr"])
    EnsembleStore([a, c]).close()
