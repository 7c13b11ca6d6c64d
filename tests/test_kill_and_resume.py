"""Interruptions, end to end: real ``dlkdd`` processes killed with SIGKILL (or frozen with SIGSTOP).

Where a kill must land at a given moment (mid-epoch, mid-write), the command freezes itself there
(``tests/stop_at.py``: a SIGSTOP from an optimizer-step hook, a wrapped ``os.replace`` or store write)
and the test sends SIGKILL to the frozen process: the kill lands exactly there on any machine, with
the suite's tiny network, instead of racing a poll loop against a network slow enough to be caught.

- ``dlkdd teacher`` killed mid-epoch and ``dlkdd student`` killed while writing a checkpoint:
  ``--resume DIR`` continues from the last good ``last.pt`` and, on CPU with a fixed seed, the
  resumed run's epoch metrics and final weights equal an uninterrupted run's.
- ``dlkdd cache-logits`` killed mid-way: the store is shown incomplete by ``cache ls``/``verify``,
  refused by ``student``; the rerun continues from the ``done`` mask and its logits equal an
  uninterrupted run's, bit for bit.
- Two ``cache-logits`` on one store: the second is refused (writer lock); the first finishes a
  sound store.
- Checkpoints, JSON and store metadata are written atomically: a writer killed at random moments
  always leaves the previous or the new file, never a torn one.
- A non-finite loss (a real one: the learning rate blows up) stops training naming the epoch,
  step, the batch's keys and the last good checkpoint.
"""
from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import faults
from faults import Job, assert_clean_error, cli, comparable, count, done_count, log_rows, wait_until

def sets(overrides=faults.TINY, extra=()):
    return faults.sets(overrides, extra)


def _same_weights(a: Path, b: Path) -> None:
    from dlkdd.train.checkpoint import load_checkpoint

    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert sa.keys() == sb.keys()
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not diff, f"{len(diff)} tensors differ between {a} and {b}, e.g. {diff[:3]}"


# ------------------------------------------------------------------------------------ fixtures
report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)


@pytest.fixture(scope="module")
def tiny(work) -> Path:
    """6 training + 2 test clips, 2 classes."""
    return faults.make_tiny_set(work / "tiny", classes=2, clips_per_class=4)


@pytest.fixture(scope="module")
def teacher_ref(work, tiny) -> Path:
    """An uninterrupted 2-epoch teacher run (the reference, and the teacher of the caches)."""
    out = work / "teacher_ref"
    r = cli(["teacher", "--config", tiny / "config.yaml", *sets(), "--out", out, "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(log_rows(out)) == 2
    return out


@pytest.fixture(scope="module")
def store_ref(work, tiny, teacher_ref) -> Path:
    r = cli(["cache-logits", "--config", tiny / "config.yaml", *sets(), "--teacher", teacher_ref / "teacher.pt",
             "--out", work / "tiny_ref.zarr", "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    return work / "tiny_ref.zarr"


@pytest.fixture(scope="module")
def many(work) -> Path:
    """A larger set for the cache tests: 16 training clips, 2 classes (same names as ``tiny``)."""
    return faults.make_tiny_set(work / "many", classes=2, clips_per_class=12, frames=16, seed=3)


MANY = [*faults.TINY, "cache.views=4"]


@pytest.fixture(scope="module")
def many_ref(work, many, teacher_ref) -> Path:
    """The logit store of ``many`` built without interruption."""
    out = work / "many_ref.zarr"
    r = cli(["cache-logits", "--config", many / "config.yaml", *sets(MANY), "--teacher", teacher_ref / "teacher.pt",
             "--out", out, "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    return out


# ------------------------------------------------------------------------------------ training
def test_teacher_sigkill_mid_epoch_then_resume_equals_uninterrupted(work, tiny, teacher_ref):
    out = work / "teacher_killed"
    args = ["teacher", "--config", tiny / "config.yaml", *sets(), "--out", out, "--no-progress"]
    # 6 training clips in batches of 2: 3 steps an epoch; frozen before the 5th, epoch 1's second step
    with Job(args, work, "teacher_killed", stop_at=("optimizer-step", 5)) as job:
        job.wait_stopped("epoch 1, step 2")
        assert job.kill9() == -signal.SIGKILL
    count("kill -9")
    from dlkdd.train.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.pt")["epoch"] == 0  # killed during epoch 1
    assert len(log_rows(out)) == 1 and not (out / "teacher.pt").exists()

    r = cli(["teacher", "--config", tiny / "config.yaml", *sets(), "--out", out, "--resume", out, "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stderr and "after epoch 0" in r.stderr
    assert comparable(log_rows(out)) == comparable(log_rows(teacher_ref))
    _same_weights(out / "teacher.pt", teacher_ref / "teacher.pt")
    m, ref = (json.loads((d / "metrics.json").read_text()) for d in (out, teacher_ref))
    assert (m["top1"], m["best_top1"], m["best_epoch"]) == (ref["top1"], ref["best_top1"], ref["best_epoch"])


def test_student_sigkill_while_writing_checkpoint_then_resume(work, tiny, store_ref):
    common = ["student", "--config", tiny / "config.yaml", *sets(), "--cache", store_ref, "--no-progress"]
    ref = work / "student_ref"
    r = cli([*common, "--out", ref])
    assert r.returncode == 0, r.stderr[-3000:]

    out = work / "student_killed"
    # kill while epoch 1's last.pt is being written: its temporary file is on disk, not yet renamed
    with Job([*common, "--out", out], work, "student_killed", stop_at=("replace:last.pt", 2)) as job:
        job.wait_stopped("the epoch-1 checkpoint write")
        assert any(out.glob(".last.pt.*.tmp")) and len(log_rows(out)) == 1
        assert job.kill9() == -signal.SIGKILL
    count("kill -9")
    from dlkdd.train.checkpoint import load_checkpoint

    ck = load_checkpoint(out / "last.pt")  # the previous good file, intact
    assert ck["epoch"] == 0 and ck["kind"] == "student"

    r = cli([*common, "--out", out, "--resume", out])
    assert r.returncode == 0, r.stderr[-3000:]
    assert not list(out.glob(".*.tmp")), "the torn temporary file of the killed write is removed on resume"
    assert comparable(log_rows(out)) == comparable(log_rows(ref))
    assert [row["alpha"] for row in log_rows(out)] == pytest.approx([1.5 * 0.95**e for e in range(2)])
    _same_weights(out / "student.pt", ref / "student.pt")


def test_non_finite_loss_stops_naming_step_keys_and_last_good_checkpoint(work, tiny):
    # a real trigger: the step schedule multiplies lr by 1e30 after epoch 0; the first update of
    # epoch 1 overflows the weights, so the next batch's loss is NaN
    out = work / "teacher_nan"
    r = cli(["teacher", "--config", tiny / "config.yaml", *sets(faults.TINY, extra=["train.schedule=step",
                                                                    "train.step_size=1", "train.step_gamma=1e30"]),
             "--out", out, "--no-progress"])
    count("non-finite loss")
    err = assert_clean_error(r, "non-finite loss", "epoch 1, step", f"Last good checkpoint: {out / 'last.pt'}")
    keys = err.split("batch keys: ")[1].split(")")[0].split(", ")
    assert keys and all(k.split("/")[0] in ("Jump", "Walk") for k in keys), err
    from dlkdd.train.checkpoint import load_checkpoint

    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] == 0 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not (out / "teacher.pt").exists() and len(log_rows(out)) == 1


# ------------------------------------------------------------------------------------ logit cache
def test_cache_logits_sigkill_then_rerun_continues_and_equals_uninterrupted(work, many, teacher_ref, many_ref):
    from dlkdd.cache.store import LogitStore

    store = work / "many_killed.zarr"
    args = ["cache-logits", "--config", many / "config.yaml", *sets(MANY), "--teacher", teacher_ref / "teacher.pt",
            "--out", store, "--no-progress"]
    with Job(args, work, "cache_killed", stop_at=("store-write", 2)) as job:  # frozen after 2 rows
        job.wait_stopped("2 clips done")
        done_at_kill = done_count(store)
        assert job.kill9() == -signal.SIGKILL
    count("kill -9")
    with LogitStore.open(store) as s:
        n = s.num_clips
        assert 2 <= done_at_kill < n, f"the kill came too late ({done_at_kill}/{n} done)"
        assert not s.is_complete and not s.meta["complete"]

    # never shown as complete, never used
    r = cli(["cache", "ls", work])
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("many_killed.zarr"))
    assert f"NO ({done_at_kill}/{n} done)" in line
    assert next(ln for ln in r.stdout.splitlines() if ln.startswith("many_ref.zarr")).rstrip().endswith("yes")
    r = cli(["cache", "verify", store])
    assert r.returncode == 1 and "not complete" in r.stderr
    r = cli(["student", "--config", many / "config.yaml", *sets(MANY), "--cache", store, "--out", work / "s_incomplete",
             "--no-progress"])
    count("incomplete store used")
    assert_clean_error(r, "does not match this run", "the store is incomplete", f"({done_at_kill}/{n} clips done")
    assert not (work / "s_incomplete" / "last.pt").exists()

    # the rerun continues from the done mask and ends equal to the uninterrupted store
    r = cli(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming: {done_at_kill} of {n} clips already done" in r.stderr
    r = cli(["cache", "verify", store])
    assert r.returncode == 0, r.stdout + r.stderr
    with LogitStore.open(store) as a, LogitStore.open(many_ref) as b:
        assert a.keys == b.keys and a.is_complete
        (la, va), (lb, vb) = a.read_all(), b.read_all()
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(va, vb)


def test_second_cache_logits_on_same_store_is_refused(work, many, teacher_ref, many_ref):
    from dlkdd.cache.store import LogitStore

    store = work / "many_locked.zarr"
    args = ["cache-logits", "--config", many / "config.yaml", *sets(MANY), "--teacher", teacher_ref / "teacher.pt",
            "--out", store, "--no-progress"]
    with Job(args, work, "cache_first", stop_at=("store-write", 1)) as first:
        first.wait_stopped("the first run writing")  # frozen mid-store: it keeps the lock
        assert done_count(store) == 1
        try:
            r = cli(args)
            count("concurrent writer")
            assert_clean_error(r, "being written by another process", f"pid {first.pid}", "many_locked.zarr")
        finally:
            first.signal(signal.SIGCONT)
        assert first.wait() == 0, first.output()[-3000:]
    r = cli(["cache", "verify", store])
    assert r.returncode == 0, r.stdout + r.stderr
    with LogitStore.open(store) as a, LogitStore.open(many_ref) as b:
        np.testing.assert_array_equal(a.read_all()[0], b.read_all()[0])


def test_damaged_hdf5_store_names_the_fix(tmp_path):
    """HDF5 is not crash-safe like Zarr's rename-per-chunk: a store torn by a kill must say so."""
    from dlkdd.cache.store import LogitStore

    h = tmp_path / "torn.h5"
    LogitStore.create(h, ["Jump/a", "Walk/b"], 2, 2, {"classes": ["Jump", "Walk"]}).close()
    data = h.read_bytes()
    h.write_bytes(data[: len(data) // 3])
    r = cli(["cache", "info", h])
    count("torn store")
    assert_clean_error(r, str(h), "--overwrite")


# ------------------------------------------------------------------------------------ atomic writes
_WRITER = r"""
import sys, torch
from pathlib import Path
from dlkdd.train.checkpoint import save_checkpoint
from dlkdd.utils import atomic_write_json
from dlkdd.cache.store import LogitStore
d = Path(sys.argv[1])
i = int(sys.argv[2])
store = LogitStore.open(d / "s.zarr", mode="r+")
while True:
    save_checkpoint(d / "c.pt", kind="student", epoch=i, model={"w": torch.full((512, 512), float(i))})
    atomic_write_json(d / "m.json", {"i": i, "pad": [i] * 50000})
    store.set_meta(step=i, pad=[i] * 2000)
    print(i, flush=True)
    i += 1
"""


def test_kill_at_random_moments_never_tears_checkpoint_json_or_store_metadata(tmp_path):
    from dlkdd.cache.store import LogitStore
    from dlkdd.train.checkpoint import load_checkpoint

    LogitStore.create(tmp_path / "s.zarr", ["a", "b"], 1, 2, {"classes": ["x", "y"]}).close()
    rng = random.Random(0)
    start = 0
    for _ in range(4):
        p = subprocess.Popen([faults.PY, "-c", _WRITER, str(tmp_path), str(start)], env=faults.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == str(start), p.stderr.read()
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()
        count("kill -9")
        ck = load_checkpoint(tmp_path / "c.pt")
        i = ck["epoch"]
        assert torch.equal(ck["model"]["w"], torch.full((512, 512), float(i)))
        m = json.loads((tmp_path / "m.json").read_text())
        assert m["pad"] == [m["i"]] * 50000 and m["i"] in (i, i - 1)
        with LogitStore.open(tmp_path / "s.zarr") as s:
            meta = s.meta
            assert meta["pad"] == [meta["step"]] * 2000 and meta["step"] in (m["i"], m["i"] - 1)
            assert meta["classes"] == ["x", "y"]
        start = i + 1
