"""The evidence study (issue 15) on arid6's group-disjoint split: many arms x seeds, resumable.

Every run is a ``dlkdd`` command in its own process, logged to ``OUT/logs/<run>.log``. A run is done
when its checkpoint exists (``teacher.pt``, ``student.pt``, ``pretrain.pt``) or, for a cache, when
``cache-logits`` has written its path file; an interrupted run resumes from its ``last.pt``, an
interrupted cache from its own store (cache-logits resumes). Runs wait for what they need (a
student for its teacher's cache). Several workers may share one OUT: a run is claimed by an
``O_EXCL`` lock file holding the worker's pid (a dead worker's claims are taken over), so

    # two workers of one thread each on a 2-core machine (more clips per second than one of two)
    OMP_NUM_THREADS=1 python -m experiments study --out runs/study --worker 0 &
    OMP_NUM_THREADS=1 python -m experiments study --out runs/study --worker 1 &

Arms (``--arms``, default all of ``ARMS``; seeds ``--seeds``, default 0 1 2), all on
``configs/arid6-mini.yaml`` (10 epochs unless said otherwise):

- ``baseline``: R(2+1)D-BERT on the dark clips, cross-entropy ("backbone only");
- ``teacher``: ZeroDCE + R(2+1)D-BERT on enhanced clips; ``cache``: its logits (8 views);
- ``student``: DL-KDD from that seed's teacher (tau 5, alpha 1.5, gamma 0.95);
- ``precision`` (issue 14, run first): baseline and student for 3 epochs in bf16 and in fp32 (``prec-*``),
  every student from the seed-0 teacher's cache: training-loss curves and accuracy of the two
  precisions, same seeds;
- ``student-ens``: DL-KDD from the mean of all three teachers' softmax(z/tau) (one cache per teacher seed);
- ``aug``: the baseline with stronger augmentation (photometric jitter 0.4, stride jitter 1, crop scale 0.5-1);
- ``diff``: the baseline on frame differences (``model.input=diff``);
- ``diff-kd`` (the DL-KDD comparison on the input that generalised, at the baseline's budget): students on
  frame differences distilled from the RGB ZeroDCE teachers' caches - ``diff-student`` (that seed's
  teacher, tau 5: the paper's loss), ``diff-student-tau2`` (the same with the KL term x tau**2, Hinton et
  al. 2015) and ``diff-student-ens`` (the mean of the three teachers' softmax(z/tau));
- ``long``: the baseline trained 30 epochs;
- ``ssl``: the baseline initialised from InfoNCE pre-training on the training clips (``pretrain-ssl``,
  10 epochs, seed 0, shared by the three seeds);
- ``motion``: the baseline initialised from synthetic-motion pre-training (``pretrain-motion``: 4 epochs
  x 512 generated clips, seed 0, shared);
- ``tiny``: the baseline on ``r2plus1d_tiny`` (R(2+1)D-10 at quarter width, ~1M parameters instead of 34M:
  less capacity to memorise 15 recordings); ``tiny-motion``: the same from synthetic-motion pre-training
  of that network (``pretrain-motion-tiny``).

Then ``dlkdd compare`` on the run directories (``--report``: ``OUT/compare.{txt,json,png}``, every arm against
the baseline, and ``OUT/kd.{txt,json,png}``, the DL-KDD comparison on RGB and on frame differences).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("study")

CONFIG = "configs/arid6-mini.yaml"
AUG = ["clip.jitter=0.4", "clip.stride_jitter=1", "clip.min_scale=0.5"]
TINY_NET = "model.backbone=r2plus1d_tiny"
MOTION_PRETRAIN = ["pretrain.task=motion", "pretrain.epochs=4", "pretrain.motion_clips=512", "pretrain.lr=0.001"]


@dataclasses.dataclass
class Run:
    name: str                 # run directory under OUT
    argv: list[str]           # the dlkdd command after `dlkdd --device cpu`
    done_file: str            # relative to OUT/name: exists when the run is complete
    needs: list[str] = dataclasses.field(default_factory=list)  # names of runs that must be done first
    resumable: bool = True    # --resume OUT/name when OUT/name/last.pt exists


def plan(arms: list[str], seeds: list[int], out: Path) -> list[Run]:
    """The runs of ``arms`` x ``seeds`` in priority order (dependencies first)."""
    runs: list[Run] = []

    def train(kind: str, name: str, sets: list[str], seed: int, extra: list[str] | None = None,
              needs: list[str] | None = None) -> Run:
        argv = [kind, "--config", CONFIG, "--out", str(out / name), "--no-progress", "--set", f"seed={seed}"]
        for s in sets:
            argv += ["--set", s]
        done = {"teacher": "teacher.pt", "pretrain": "pretrain.pt"}.get(kind, "student.pt")
        return Run(name, argv + list(extra or []), done, list(needs or []))

    def cache(seed: int) -> Run:
        name = f"cache-s{seed}"
        return Run(name, ["cache-logits", "--config", CONFIG, "--set", f"seed={seed}",
                          "--teacher", str(out / f"teacher-s{seed}" / "teacher.pt"),
                          "--out", str(out / name / "store.zarr"), "--path-file", str(out / name / "path.txt"),
                          "--no-progress"], "path.txt", [f"teacher-s{seed}"], resumable=False)

    def cache_path(seed: int) -> str:
        return str(out / f"cache-s{seed}" / "store.zarr")

    # the students of every seed's teacher (their mean soft targets): the caches and the runs they need
    all_caches = [c for s in seeds for c in ("--cache", cache_path(s))]
    all_cache_runs = [f"cache-s{s}" for s in seeds]

    want = set(arms)
    if "precision" in want:  # issue 14, first: the same seeds in bf16 and fp32, 3 epochs (the demo's budget);
        # every student distils from the seed-0 teacher's cache, so only the student's own seed varies
        if not (0 in seeds and want & {"teacher", "student", "student-ens"}):  # else the loop below adds them
            runs += [train("teacher", "teacher-s0", [], 0), cache(0)]
        for seed in seeds:
            for amp in ("bf16", "fp32"):
                sets = [f"train.amp={amp}", "train.epochs=3", "train.eval_every=3"]
                runs.append(train("student", f"prec-baseline-{amp}-s{seed}", sets, seed, ["--no-kd"]))
                runs.append(train("student", f"prec-student-{amp}-s{seed}", sets, seed,
                                  ["--cache", cache_path(0)], ["cache-s0"]))
    for seed in seeds:
        if "baseline" in want:
            runs.append(train("student", f"baseline-s{seed}", [], seed, ["--no-kd"]))
        if want & {"teacher", "student", "student-ens"}:
            runs.append(train("teacher", f"teacher-s{seed}", [], seed))
            runs.append(cache(seed))
        if "student" in want:
            runs.append(train("student", f"student-s{seed}", [], seed, ["--cache", cache_path(seed)],
                              [f"cache-s{seed}"]))
    for seed in seeds:
        if "student-ens" in want:
            runs.append(train("student", f"student-ens-s{seed}", [], seed, all_caches, all_cache_runs))
        if "aug" in want:
            runs.append(train("student", f"aug-s{seed}", AUG, seed, ["--no-kd"]))
        if "diff" in want:
            runs.append(train("student", f"diff-s{seed}", ["model.input=diff"], seed, ["--no-kd"]))
    # the DL-KDD comparison at equal student budget on the input that generalised (frame differences):
    # the RGB ZeroDCE teachers' caches, the student on dark frame differences
    for seed in seeds:
        if "diff-kd" in want:
            runs.append(train("student", f"diff-student-s{seed}", ["model.input=diff"], seed,
                              ["--cache", cache_path(seed)], [f"cache-s{seed}"]))
            runs.append(train("student", f"diff-student-tau2-s{seed}", ["model.input=diff", "kd.tau2_scale=true"],
                              seed, ["--cache", cache_path(seed)], [f"cache-s{seed}"]))
    for seed in seeds:
        if "diff-kd" in want:
            runs.append(train("student", f"diff-student-ens-s{seed}", ["model.input=diff"], seed, all_caches,
                              all_cache_runs))
    if "motion" in want:
        runs.append(train("pretrain", "pretrain-motion", MOTION_PRETRAIN, 0))
    if "ssl" in want:
        runs.append(train("pretrain", "pretrain-ssl", ["pretrain.epochs=10", "pretrain.lr=0.001"], 0))
    for seed in seeds:
        for arm in ("motion", "ssl"):
            if arm in want:
                init = str(out / f"pretrain-{arm}" / "pretrain.pt")
                runs.append(train("student", f"{arm}-s{seed}", [f"model.pretrained={init}"], seed, ["--no-kd"],
                                  [f"pretrain-{arm}"]))
    if "tiny-motion" in want:
        runs.append(train("pretrain", "pretrain-motion-tiny", [TINY_NET, *MOTION_PRETRAIN], 0))
    for seed in seeds:
        if "tiny" in want:
            runs.append(train("student", f"tiny-s{seed}", [TINY_NET], seed, ["--no-kd"]))
        if "tiny-motion" in want:
            init = str(out / "pretrain-motion-tiny" / "pretrain.pt")
            runs.append(train("student", f"tiny-motion-s{seed}", [TINY_NET, f"model.pretrained={init}"], seed,
                              ["--no-kd"], ["pretrain-motion-tiny"]))
    for seed in seeds:
        if "long" in want:
            runs.append(train("student", f"long-s{seed}", ["train.epochs=30"], seed, ["--no-kd"]))
    return runs


ARMS = ["baseline", "teacher", "student", "precision", "student-ens", "aug", "diff", "diff-kd", "motion", "ssl", "long",
        "tiny", "tiny-motion"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(lock: Path) -> bool:
    """Take ``lock`` for this process (O_EXCL); a lock whose pid is dead is taken over."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                return False
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def busy(run_dir: Path) -> bool:
    """True while a live process holds the run directory's own lock (``run.lock``: "pid N on HOST")."""
    try:
        words = (run_dir / "run.lock").read_text().split()
        return words[0] == "pid" and _alive(int(words[1]))
    except (OSError, IndexError, ValueError):
        return False


def execute(run: Run, out: Path) -> int:
    rd = out / run.name
    argv = list(run.argv)
    if run.resumable and (rd / "last.pt").exists():
        argv += ["--resume", str(rd)]
    (out / "logs").mkdir(parents=True, exist_ok=True)
    if run.name.startswith("cache-"):
        rd.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "dlkdd", "--device", "cpu", *argv]
    log.info("start %s: %s", run.name, " ".join(cmd[3:]))
    t0 = time.time()
    with open(out / "logs" / f"{run.name}.log", "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    log.info("end %s: rc %d after %.1f min", run.name, rc, (time.time() - t0) / 60)
    return rc


#: the reports of `--report`: (file stem, arms in order, the earlier arms every later one is compared with);
#: an arm's runs are named ``<arm>-s<seed>``
REPORTS = [
    # does anything generalise? every arm against the baseline (and the tiny network's lever against it)
    ("compare", ["baseline", "teacher", "student", "student-ens", "aug", "diff", "motion", "ssl", "long", "tiny",
                 "tiny-motion"], ["baseline", "tiny"]),
    # DL-KDD at equal student budget: on RGB (where nothing generalises) and on frame differences
    ("kd", ["baseline", "teacher", "student", "student-ens", "diff", "diff-student", "diff-student-tau2",
            "diff-student-ens"], ["baseline", "teacher", "diff", "diff-student"]),
]


def report(out: Path, finished: list[Run], reports: list | None = None) -> None:
    """``dlkdd compare`` of the finished runs of each report's arms (an arm needs at least one run):
    ``OUT/<stem>.{txt,json,png}`` per report of :data:`REPORTS`."""
    for stem, arms, against in (REPORTS if reports is None else reports):
        groups, present = [], []
        for arm in arms:
            prefix = f"{arm}-s"
            dirs = [str(out / r.name) for r in finished
                    if r.name.startswith(prefix) and r.name[len(prefix):].isdigit()]
            if dirs:
                groups.append(f"{arm}={','.join(sorted(dirs))}")
                present.append(arm)
        if not groups:
            log.info("%s: no finished run to compare yet", stem)
            continue
        cmd = [sys.executable, "-m", "dlkdd", "compare", *groups, "--json", str(out / f"{stem}.json"),
               "--plot", str(out / f"{stem}.png")]
        for a in against:
            if a in present[:-1]:
                cmd += ["--against", a]
        text = subprocess.run(cmd, capture_output=True, text=True)
        (out / f"{stem}.txt").write_text(text.stdout + text.stderr)
        print(text.stdout + text.stderr)  # noqa: T201


def work(runs: list[Run], out: Path) -> None:
    """Run every run of ``runs`` not done yet, dependencies first, claiming each by a lock so that
    several workers can share ``out``; a failed run is logged and what needs it is skipped."""
    by_name = {r.name: r for r in runs}

    def done(name: str) -> bool:
        r = by_name.get(name)
        return r is not None and (out / r.name / r.done_file).exists()

    failed: set[str] = set()
    while True:
        pending = [r for r in runs if not done(r.name) and r.name not in failed]
        if not pending:
            break
        ready = [r for r in pending if all(done(n) for n in r.needs)]
        ran = False
        for r in ready:
            if busy(out / r.name):  # e.g. started by a worker that was stopped; it finishes on its own
                continue
            lock = out / "locks" / f"{r.name}.lock"
            if not claim(lock):
                continue
            try:
                if not done(r.name) and execute(r, out) != 0:
                    failed.add(r.name)
                    log.error("%s failed: see %s", r.name, out / "logs" / f"{r.name}.log")
            finally:
                lock.unlink(missing_ok=True)
            ran = True
            break
        if not ran:
            if all(any(n in failed for n in r.needs) for r in pending):
                break  # what is left waits on a failed run
            time.sleep(20)
    log.info("worker done; failed: %s", sorted(failed) or "none")


def parse_args(name: str, doc: str, arms: list[str], argv: list[str] | None, report_help: str) -> argparse.Namespace:
    """The options of a resumable study driver (``python -m experiments NAME``): ``--out`` (default
    ``runs/NAME``), ``--arms``, ``--seeds``, ``--worker``, ``--list``, ``--report``; logging set up per worker."""
    ap = argparse.ArgumentParser(prog=f"python -m experiments {name}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=f"runs/{name}")
    ap.add_argument("--arms", nargs="+", default=arms, choices=arms)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--worker", type=int, default=0, help="a name for this worker's log lines")
    ap.add_argument("--list", action="store_true", help="print the plan and each run's state, run nothing")
    ap.add_argument("--report", action="store_true", help=report_help)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s w{a.worker} %(message)s", datefmt="%H:%M:%S")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse_args("study", __doc__, ARMS, argv,
                   "run nothing: `dlkdd compare` of the finished runs of every arm -> OUT/compare.{txt,json,png}")
    out = Path(a.out)
    runs = plan(a.arms, a.seeds, out)
    by_name = {r.name: r for r in runs}

    def done(name: str) -> bool:
        r = by_name.get(name)
        return r is not None and (out / r.name / r.done_file).exists()

    if a.report:
        report(out, [r for r in runs if done(r.name)])
        return
    if a.list:
        for r in runs:
            state = "done" if done(r.name) else ("partial" if (out / r.name).exists() else "todo")
            print(f"{state:8s} {r.name}")  # noqa: T201
        return
    work(runs, out)


if __name__ == "__main__":
    main()
