"""The pipeline under ``torchrun --nproc_per_node=2`` (gloo, CPU) on a tiny synthetic dark set.

(a) A DDP student epoch (KD from a cached store) ends with the weights a single process gets by
    training on the same global batches: DDP averages the two ranks' gradients, which equals
    accumulating the two per-rank half batches (BatchNorm then normalises each half with its own
    statistics, as each DDP rank does). Parameters are compared, not BN running statistics (per-rank
    in DDP; rank 0's are kept). The reduced train loss equals the single-process average, the
    validation count is the test set size (no sampler padding), and a resumed distributed run
    continues exactly.
(b) A sharded precompute writes a store equal, key for key, to the single-process one (Zarr:
    ranks write disjoint chunks; HDF5: per-rank part stores merged by rank 0), and parts left by
    a killed HDF5 run are merged on the next run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TORCHRUN = Path(sys.executable).with_name("torchrun")
SEED = 3


def _sets(d: Path, extra=()):
    kv = {"clip.frames": 4, "clip.size": 32, "clip.resize": 36, "train.epochs": 1, "train.batch_size": 2,
          "train.workers": 0, "train.amp": "fp32", "train.schedule": "constant", "train.lr": 1e-3,
          "cache.views": 2, "cache.dir": str(d / "cache"), "cache.batch_size": 4, "enhancer.kind": "gamma",
          "model.head": "avg", "model.head_dropout": 0.0, "model.backbone": "r2plus1d_tiny", "seed": SEED}
    kv.update(dict(extra))
    out = []
    for k, v in kv.items():
        out += ["--set", f"{k}={v}"]
    return out


def _cfg(run, extra=()):
    from dlkdd.config import load_config

    return load_config(run["cfg"], [s for s in _sets(run["dir"], extra) if s != "--set"])


def torchrun_start(args, nproc=2):
    """Start ``torchrun --standalone --nproc_per_node=N -m dlkdd --device cpu ARGS`` (returns the Popen)."""
    if not TORCHRUN.exists():
        pytest.skip(f"torchrun not found beside {sys.executable}")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}", "-m", "dlkdd", "--device", "cpu",
           *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def torchrun_wait(proc, timeout=240):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{out[-3000:]}\n{err[-6000:]}"
    return out


def torchrun(args, nproc=2):
    return torchrun_wait(torchrun_start(args, nproc))


@pytest.fixture(scope="module")
def run(module_dir):
    from dlkdd.pipeline.cache_logits import precompute_logits
    from dlkdd.config import load_config
    from dlkdd.data.synth import make_synthetic
    from dlkdd.models.build import build_teacher, teacher_arch
    from dlkdd.train.checkpoint import save_checkpoint

    d = module_dir
    paths = make_synthetic(d / "data", classes=3, clips_per_class=4, frames=12, size=(32, 40), seed=1)
    run = {"dir": d, "cfg": paths["config"]}
    cfg = load_config(paths["config"], [s for s in _sets(d) if s != "--set"])
    from dlkdd.data.manifest import manifest_from_config

    classes = list(manifest_from_config(cfg.data, "train").classes)
    torch.manual_seed(0)  # an untrained teacher is enough: the cache only has to be reproducible
    teacher = build_teacher(cfg, len(classes))
    run["teacher"] = save_checkpoint(d / "teacher.pt", kind="teacher", arch=teacher_arch(cfg, len(classes)),
                                     config=cfg.to_dict(), classes=classes, model=teacher.state_dict(), epoch=0)
    # the single-process reference store (Zarr; the HDF5 runs are compared with it too)
    run["one.zarr"] = precompute_logits(cfg, run["teacher"], out=d / "one.zarr", device="cpu", progress=False)
    return run


@pytest.fixture(scope="module")
def launched(run):
    """The independent 2-process runs, started together (they mostly wait on start-up and disk):
    the sharded Zarr and HDF5 precomputes and one DDP student epoch (KD from the reference store)."""
    d = run["dir"]
    jobs = {fmt: torchrun_start(["cache-logits", "--config", run["cfg"], *_sets(d), "--teacher", run["teacher"],
                                 "--out", d / f"two.{fmt}", "--no-progress"]) for fmt in ("zarr", "h5")}
    jobs["student"] = torchrun_start(["student", "--config", run["cfg"], *_sets(d), "--cache", run["one.zarr"],
                                      "--out", d / "student-ddp", "--no-progress"])
    failures = {}
    for name, proc in jobs.items():
        try:
            torchrun_wait(proc)
        except AssertionError as e:
            failures[name] = str(e)
    return failures


def _assert_same_store(a, b):
    from dlkdd.cache.store import LogitStore

    with LogitStore.open(a) as x, LogitStore.open(b) as y:
        assert y.is_complete and y.done.all()
        assert x.keys == y.keys and len(set(y.keys)) == y.num_clips  # no duplicated or missing key
        for key in x.keys:
            lx, vx = x.read_key(key)
            ly, vy = y.read_key(key)
            np.testing.assert_array_equal(vx, vy, err_msg=key)  # the same views, exactly
            np.testing.assert_allclose(lx, ly, rtol=2e-3, atol=2e-3, err_msg=key)  # float16 precision
        same = ("teacher_sha256", "manifest_sha256", "classes", "clip", "view_seed", "views_per_clip", "dtype")
        assert {k: x.meta.get(k) for k in same} == {k: y.meta.get(k) for k in same}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", ["zarr", "h5"])
def test_sharded_precompute_equals_single_process(run, launched, fmt):
    assert fmt not in launched, launched.get(fmt)
    d = run["dir"]
    out = d / f"two.{fmt}"
    _assert_same_store(run["one.zarr"], out)
    assert not (d / f"two.{fmt}.parts").exists()  # rank 0 merged and removed the HDF5 parts


def test_killed_hdf5_parts_are_merged_on_resume(run, monkeypatch):
    """A distributed HDF5 run killed after rank 1 wrote rows 3..5 into its part: the next run (here a
    single process) copies those rows in, scores only the rest, and ends equal to the reference."""
    from dlkdd.cache.parts import parts_dir
    from dlkdd.cache.store import LogitStore
    from dlkdd.pipeline import cache_logits as precompute

    d = run["dir"]
    h5 = d / "killed.h5"
    with LogitStore.open(run["one.zarr"]) as ref:  # rows 0..2 in the .h5, rows 3..5 in rank 1's part
        meta = {k: v for k, v in ref.meta.items() if k != "complete"}
        with LogitStore.create(h5, ref.keys, ref.views_per_clip, ref.num_classes, meta) as s:
            s.write_many([0, 1, 2], *ref.read_many([0, 1, 2]))
        part = parts_dir(h5) / "rank1.zarr"
        with LogitStore.create(part, ref.keys, ref.views_per_clip, ref.num_classes, meta) as p:
            p.write_many([3, 4, 5], *ref.read_many([3, 4, 5]))
    scored = []
    real = precompute._score
    monkeypatch.setattr(precompute, "_score", lambda job, path, mine, *a: scored.append(list(mine)) or
                        real(job, path, mine, *a))
    precompute.precompute_logits(_cfg(run), run["teacher"], out=h5, device="cpu", progress=False)
    assert scored == [list(range(6, 9))]
    assert not parts_dir(h5).exists()
    _assert_same_store(run["one.zarr"], h5)


def _reference_training(run, cfg, epochs):
    """What DDP on 2 ranks must compute, in one process: for every step, rank 0's and rank 1's
    batches (DistributedSampler shares of the epoch) accumulated into one optimizer step."""
    from torch.utils.data.distributed import DistributedSampler

    from dlkdd.cache.reader import StoreRows
    from dlkdd.data.dataset import ClipDataset, collate
    from dlkdd.data.views import StoredView
    from dlkdd.models.build import build_student
    from dlkdd.data.prepare import prepare_data
    from dlkdd.config import TrainConfig
    from dlkdd.train.engine import EpochRun, steps_per_epoch, train_one_epoch
    from dlkdd.train.objectives import build_objective
    from dlkdd.train.optim import build_optimizer, build_scheduler
    from dlkdd.utils import seed_everything

    # one intra-op thread, like each torchrun rank: at this tiny size (BatchNorm over 2 clips of
    # 1x2x2 in layer4) the untrained network's gradients differ by ~1% between 1 and 2 threads
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seed_everything(cfg.seed)
        data = prepare_data(cfg, progress=False)
        ds = ClipDataset(data.train, cfg.clip, StoredView(StoreRows(data.train, run["one.zarr"]), seed=cfg.seed))
        model = build_student(cfg, len(data.classes))
        init = {k: v.detach().clone() for k, v in model.named_parameters()}
        tc = cfg.train
        opt = build_optimizer(model, tc)
        per_rank = len(DistributedSampler(ds, num_replicas=2, rank=0)) // tc.batch_size  # drop_last batches
        sched = build_scheduler(opt, tc, steps_per_epoch(per_rank, 1, 0))
        obj = build_objective(cfg.kd)
        metrics, snaps = [], []
        for epoch in range(epochs):
            shares = []
            for r in range(2):
                s = DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=cfg.seed)
                s.set_epoch(epoch)
                shares.append(list(s))
            ds.set_epoch(epoch)
            bs = tc.batch_size
            batches = [collate([ds[i] for i in shares[r][b * bs:(b + 1) * bs]])
                       for b in range(per_rank) for r in range(2)]
            metrics.append(train_one_epoch(model, batches, obj, opt, sched, epoch,
                                           TrainConfig(accum_steps=2, amp="fp32"), EpochRun("cpu", progress=False)))
            snaps.append({k: v.detach().clone() for k, v in model.named_parameters()})
    finally:
        torch.set_num_threads(threads)
    return snaps, init, metrics


@pytest.mark.timeout(240)
def test_ddp_student_matches_single_process_and_resumes(run, launched):
    from dlkdd.train.checkpoint import load_checkpoint

    assert "student" not in launched, launched.get("student")
    d = run["dir"]
    out = d / "student-ddp"
    args = ["student", "--config", run["cfg"], "--cache", run["one.zarr"], "--out", out, "--no-progress"]
    m = json.loads((out / "metrics.json").read_text())
    snaps, init, ref_m = _reference_training(run, _cfg(run, {"train.epochs": 2}), epochs=2)
    # reduced metrics: 9 training clips -> each rank 5 (DistributedSampler pads 1), 2 batches of 2 kept
    assert m["train"]["clips"] == 8 and ref_m[0]["clips"] == 8
    assert m["train"]["loss"] == pytest.approx(ref_m[0]["loss"], rel=1e-4)
    assert m["train"]["top1"] == pytest.approx(ref_m[0]["top1"])
    assert m["val"]["n"] == 3 and sum(m["val"]["per_class_n"]) == 3  # the test set, no padded duplicates
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt", "student.pt"]

    epoch0 = load_checkpoint(out / "last.pt")["model"]
    for k, v in snaps[0].items():
        torch.testing.assert_close(epoch0[k], v, rtol=1e-4, atol=2e-5, msg=k)

    # resume the finished 1-epoch run for a second epoch (constant lr: the schedule does not depend
    # on the epoch count); the resumed DDP run must equal 2 single-process reference epochs
    torchrun([*args[:3], *_sets(d, {"train.epochs": 2}), *args[3:], "--resume", out])
    ck = load_checkpoint(out / "student.pt")
    assert ck["epoch"] == 1 and [h["epoch"] for h in ck["history"]] == [0, 1]
    got = ck["model"]
    for k, v in snaps[1].items():
        torch.testing.assert_close(got[k], v, rtol=1e-4, atol=2e-5, msg=k)
        moved = min(float((got[k] - epoch0[k]).abs().max()), float((epoch0[k] - init[k]).abs().max()))
    assert moved > 1e-4  # both epochs really changed the weights (of the last parameter, the fc bias)
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["train"]["loss"] == pytest.approx(ref_m[1]["loss"], rel=1e-4)
