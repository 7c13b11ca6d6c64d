"""Fault-injection helpers for the reliability tests (tests/test_reliability_*.py).

They run the real CLI (``python -m dlkdd ...``) in a subprocess, poll its run directory or logit
store, and interrupt it with real signals (SIGKILL, SIGSTOP/SIGCONT), so what is tested is what
a user's killed job leaves on disk. Everything runs on a tiny synthetic ARID-format set
(``make_tiny_set``) with tiny settings (``TINY``: 4 frames of 32x32, batch 2, no workers, an
average temporal head and the gamma enhancer), so one training epoch takes about a second on CPU.

``FAULTS`` counts, per test module, the faults and bad inputs tried (a bad input, a kill, a
locked store...); each module prints its total on the terminal when it finishes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
STOP_AT = Path(__file__).resolve().with_name("stop_at.py")

#: Tiny training settings: clips of 4x32x32, batch 2, no loader workers, avg head, gamma enhancer.
TINY = [
    "clip.frames=4", "clip.stride=2", "clip.size=32", "clip.resize=40",
    "train.batch_size=2", "train.workers=0", "train.epochs=2", "train.lr=1e-4",
    "model.head=avg", "model.backbone=r2plus1d_tiny", "model.normalize=dataset", "enhancer.kind=gamma",
    "cache.views=2", "cache.batch_size=1", "seed=7",
]

#: Tally of what the reliability suite tries: {"bad input": n, "kill": n, ...}.
FAULTS: Counter = Counter()


def count(kind: str, n: int = 1) -> None:
    FAULTS[kind] += n


def sets(overrides: Sequence[str] = TINY, extra: Sequence[str] = ()) -> list[str]:
    """``["--set", k=v, ...]`` for the CLI."""
    out: list[str] = []
    for kv in list(overrides) + list(extra):
        out += ["--set", kv]
    return out


def make_tiny_set(out: Path, classes: int = 2, clips_per_class: int = 3, frames: int = 12, seed: int = 0) -> Path:
    """A synthetic dark action set in ARID format in ``out`` (``out/config.yaml`` holds its data section).

    Clip ``j`` of each class goes to the test list when ``j % 3 == 2``. Returns ``out``.
    """
    from dlkdd.data.synth import make_synthetic

    make_synthetic(out, classes=classes, clips_per_class=clips_per_class, frames=frames, size=(32, 48), seed=seed)
    return out


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["PYTHONUNBUFFERED"] = "1"
    # one intra-op thread: a run and its resumed twin compute identically, and on a shared
    # 2-core machine oversubscribed OpenMP threads only spin
    e["OMP_NUM_THREADS"] = e["MKL_NUM_THREADS"] = "1"
    return e


def cli(args: Sequence[str], cwd: Path | None = None, timeout: float = 300,
        prefix: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """Run ``dlkdd ARGS`` to completion; returns the CompletedProcess (text stdout/stderr)."""
    return subprocess.run([*prefix, PY, "-m", "dlkdd", *map(str, args)], cwd=cwd or REPO, env=env(),
                          capture_output=True, text=True, timeout=timeout)


class Job:
    """A ``dlkdd`` command running in the background; its output goes to files (no pipe stalls)."""

    def __init__(self, args: Sequence[str], logdir: Path, name: str, cwd: Path | None = None,
                 stop_at: tuple[str, int] | None = None):
        """``stop_at=(POINT, N)``: the command freezes itself there (tests/stop_at.py); see :meth:`wait_stopped`."""
        logdir.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logdir / f"{name}.out", logdir / f"{name}.err"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        run = [PY, "-m", "dlkdd"] if stop_at is None else [PY, str(STOP_AT), stop_at[0], str(stop_at[1]), "--"]
        self.proc = subprocess.Popen([*run, *map(str, args)], cwd=cwd or REPO, env=env(),
                                     stdout=self._out, stderr=self._err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stopped(self) -> bool:
        """True while the process is stopped (SIGSTOP): state ``T`` in ``/proc/PID/stat``."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] == "T"

    def wait_stopped(self, what: str, timeout: float = 240) -> None:
        """Wait until the command froze itself at its ``stop_at`` point."""
        wait_until(self.stopped, self, timeout=timeout, poll=0.01, what=what)

    def kill9(self) -> int:
        """SIGKILL and reap; returns the exit code (-9 if the kill landed)."""
        self.signal(signal.SIGKILL)
        return self.wait()

    def wait(self, timeout: float = 300) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self._out.close()
            self._err.close()
        return rc

    def output(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, *exc) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)
            self.kill9()


def wait_until(pred: Callable[[], bool], job: Job | None = None, timeout: float = 240, poll: float = 0.005,
               what: str = "condition") -> None:
    """Poll ``pred`` until true; fail if ``job`` exits first or ``timeout`` s pass."""
    t0 = time.monotonic()
    while not pred():
        if job is not None and not job.alive():
            raise AssertionError(f"the job ended (rc {job.proc.returncode}) before {what}:\n{job.output()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def log_rows(run_dir: Path) -> list[dict]:
    """The epoch rows of ``run_dir/log.json`` ([] if absent or being replaced)."""
    try:
        return json.loads((run_dir / "log.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []


TIMING = ("train_seconds", "train_clips_per_s")


def comparable(rows: list[dict]) -> list[dict]:
    """Epoch rows without wall-clock fields (what must be equal between two runs)."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def done_count(store: Path) -> int:
    """Rows marked done in a logit store being written (0 if it does not exist yet)."""
    from dlkdd.cache.store import LogitStore

    if not (store / "zarr.json").is_file():
        return 0
    try:
        with LogitStore.open(store) as s:
            return int(s.done.sum())
    except Exception:  # the store's metadata is being created right now
        return 0


def assert_clean_error(res: subprocess.CompletedProcess | object, *needles: str, rc: int | None = None) -> str:
    """The command failed with one ``Error: ...`` line holding every needle, and no traceback.

    ``res``: a CompletedProcess or a click ``Result``. Returns the error line.
    """
    if isinstance(res, subprocess.CompletedProcess):
        code, text = res.returncode, res.stdout + res.stderr
    else:  # click.testing.Result
        code, text = res.exit_code, res.output
        exc = getattr(res, "exception", None)
        assert exc is None or isinstance(exc, SystemExit), f"uncaught {type(exc).__name__}: {exc}\n{text}"
    assert code != 0, f"expected a failure, got rc 0:\n{text[-2000:]}"
    if rc is not None:
        assert code == rc, f"rc {code}, expected {rc}:\n{text[-2000:]}"
    assert "Traceback" not in text, text[-4000:]
    lines = [ln for ln in text.splitlines() if ln.startswith("Error:") or ln.startswith("Error ")]
    assert lines, f"no 'Error:' line:\n{text[-2000:]}"
    err = lines[-1]
    for n in needles:
        assert n in err, f"{n!r} not in the error line: {err}"
    return err


def rm(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def unprivileged_prefix() -> list[str] | None:
    """A command prefix under which file permissions apply (``[]`` for a normal user).

    root bypasses permission bits; ``setpriv`` drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    from the bounding set so a ``chmod 000`` directory is unreadable to the child. None if that
    is not possible here.
    """
    if os.geteuid() != 0:
        return []
    sp = shutil.which("setpriv")
    if not sp:
        return None
    prefix = [sp, "--bounding-set=-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def report_faults(request):
    """Module fixture (autouse in each reliability module): prints what the module tried."""
    before = Counter(FAULTS)
    yield
    tried = FAULTS - before
    pm = request.config.pluginmanager
    tr, capman = pm.getplugin("terminalreporter"), pm.getplugin("capturemanager")
    if tr is not None and tried:
        line = (f"\n[{request.module.__name__}] faults and bad inputs tried: {sum(tried.values())} "
                f"({', '.join(f'{k}: {v}' for k, v in sorted(tried.items()))})")
        if capman is not None:
            with capman.global_and_fixture_disabled():
                tr.write_line(line)
        else:
            tr.write_line(line)


def make_checkpoint(path: Path, config_yaml: Path, kind: str = "student", extra_sets: Sequence[str] = (),
                    epoch: int = 0) -> Path:
    """A self-contained checkpoint of an untrained tiny model (TINY settings), written in-process.

    ``kind``: student (a classifier) or teacher (gamma enhancer -> classifier). Enough for
    ``predict``/``evaluate``/``cache-logits`` and ``--resume`` (as ``DIR/last.pt``).
    """
    import torch

    from dlkdd.config import load_config
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.models.build import build_student, build_teacher, student_arch, teacher_arch
    from dlkdd.train.checkpoint import save_checkpoint

    cfg = load_config(config_yaml, [*TINY, *extra_sets])
    classes = manifest_from_config(cfg.data, "train", check_files=False).classes
    n = len(classes)
    torch.manual_seed(0)
    if kind == "teacher":
        model, arch = build_teacher(cfg, n), teacher_arch(cfg, n)
    else:
        model, arch = build_student(cfg, n), student_arch(cfg, n)
    return save_checkpoint(path, kind=kind, arch=arch, config=cfg.to_dict(), classes=list(classes),
                           model=model.state_dict(), epoch=epoch, history=[], extra={})


def set_raw_meta(path, fmt: str, **kv) -> None:
    """Overwrite a logit store's metadata keys behind LogitStore's back (to fake a damaged or
    foreign store): Zarr group attributes, or the HDF5 ``dlkdd_meta`` JSON attribute."""
    if fmt == "zarr":
        import zarr

        zarr.open_group(str(path), mode="r+").attrs.update(kv)
    else:
        import h5py

        with h5py.File(path, "r+") as f:
            m = json.loads(f.attrs["dlkdd_meta"])
            m.update(kv)
            f.attrs["dlkdd_meta"] = json.dumps(m)
