"""experiments/study.py (the resumable evidence study): its plan, dependencies and run claims."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _study():
    spec = importlib.util.spec_from_file_location("study", REPO / "experiments" / "study.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["study"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_plan_orders_dependencies_and_shares_the_seed0_cache(tmp_path):
    st = _study()
    runs = st.plan(["precision", "baseline", "teacher", "student", "student-ens", "motion"], [0, 1], tmp_path)
    names = [r.name for r in runs]
    assert names[:2] == ["prec-baseline-bf16-s0", "prec-student-bf16-s0"]  # issue 14's arm first
    assert len(names) == len(set(names))
    by = {r.name: r for r in runs}
    for r in runs:  # every dependency is planned
        assert all(n in by for n in r.needs), r.name
    assert by["prec-student-fp32-s1"].needs == ["cache-s0"]  # precision students: one teacher
    assert by["student-s1"].needs == ["cache-s1"] and by["cache-s1"].needs == ["teacher-s1"]
    assert sorted(by["student-ens-s0"].needs) == ["cache-s0", "cache-s1"]
    assert by["motion-s1"].needs == ["pretrain-motion"]
    argv = by["prec-baseline-fp32-s1"].argv
    assert "--no-kd" in argv and "train.amp=fp32" in argv and "seed=1" in argv
    assert by["cache-s0"].done_file == "path.txt" and not by["cache-s0"].resumable


def test_claims_are_exclusive_and_a_dead_workers_claim_is_taken_over(tmp_path):
    st = _study()
    lock = tmp_path / "locks" / "x.lock"
    assert st.claim(lock) and not st.claim(lock)  # the second claim meets this (live) process's own
    lock.write_text(str(os.getppid()))  # a live process holds it
    assert not st.claim(lock)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(dead.stdout.strip())  # that process has exited
    assert st.claim(lock) and lock.read_text() == str(os.getpid())
    run = tmp_path / "run"
    run.mkdir()
    assert not st.busy(run)
    (run / "run.lock").write_text(f"pid {os.getppid()} on host")
    assert st.busy(run)
    (run / "run.lock").write_text(f"pid {dead.stdout.strip()} on host")
    assert not st.busy(run)


def test_plan_adds_the_precision_teacher_once_whatever_the_seed_order(tmp_path):
    st = _study()
    for seeds in ([0, 1], [1, 0], [1, 2]):
        names = [r.name for r in st.plan(["precision", "teacher"], seeds, tmp_path)]
        assert names.count("teacher-s0") == 1 and names.count("cache-s0") == 1, seeds


def test_experiments_driver_lists_and_runs_by_name():
    """`python -m experiments` lists the table; `python -m experiments NAME -h` reaches NAME's own options."""
    from experiments import EXPERIMENTS

    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "experiments"], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and all(name in out.stdout for name in EXPERIMENTS)
    h = subprocess.run([sys.executable, "-m", "experiments", "study", "-h"], cwd=REPO, env=env, capture_output=True,
                       text=True)
    assert h.returncode == 0 and "python -m experiments study" in h.stdout and "--worker" in h.stdout
    bad = subprocess.run([sys.executable, "-m", "experiments", "nope"], cwd=REPO, env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown experiment" in bad.stderr
