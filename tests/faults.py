"""Fault-injection helpers for the reliability tests (the tests of bad inputs, kills, damaged stores,
outputs, resources...).

They run the real CLI in a process of its own - forked from a command server, see "Where the
commands run" below; not a ``python -m dlkdd`` subprocess - poll its run directory or logit store,
and interrupt it with real signals (SIGKILL, SIGSTOP/SIGCONT), so what is tested is what a user's
killed job leaves on disk. Everything runs on a tiny synthetic ARID-format set
(``make_tiny_set``) with tiny settings (``TINY``: 4 frames of 32x32, batch 2, no workers, an
average temporal head and the gamma enhancer), so one training epoch takes about a second on CPU.

``FAULTS`` counts, per test module, the faults and bad inputs tried (a bad input, a kill, a
locked store...); each module prints its total on the terminal when it finishes.

Where the commands run: each command is its own process with its own pid, exit code, stdout and
stderr, as ``python -m dlkdd ARGS`` is, but it is forked from a *command server* (multiprocessing's
forkserver, one per pytest worker) that imported torch, dlkdd and the libraries the commands use
once, so a command starts in about 50 ms instead of about 4 s (torch 2 s, ``torch._dynamo`` 1.3 s -
the first ``Optimizer.add_param_group`` imports it - matplotlib 0.5 s). About 45 commands run this
way. What a fork does not give, the command still gets: it runs in the given working directory
with exactly ``env()``, with fds 1 and 2 on its own files and ``sys.argv`` of the real command;
signals and SIGKILL reach it like any process; an uncaught exception prints its traceback and
exits 1; ``unprivileged=True`` drops root's permission-bypassing capabilities in it first;
``fsize=N`` sets its file-size limit (``ulimit -f``, RLIMIT_FSIZE) to N bytes, with SIGXFSZ ignored
as Python ignores it, so that a write past N fails with EFBIG: a full disk, on demand.
``test_cli_entry.py`` checks ``python -m dlkdd`` and the ``dlkdd`` script themselves.
"""
from __future__ import annotations

import atexit
import io
import json
import multiprocessing.util  # noqa: F401  - its exit handler (join children) registered before ours
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

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


#: What the command server imports before it forks a command: everything a command would import
#: itself (importing first changes nothing a command computes, only when the import happens).
PRELOAD = [
    "torch", "torch._dynamo", "numpy", "av", "h5py", "zarr", "matplotlib", "matplotlib.pyplot", "yaml", "tqdm",
    "dlkdd.cli", "dlkdd.pipeline.teacher", "dlkdd.pipeline.student", "dlkdd.pipeline.cache_logits",
    "dlkdd.pipeline.evaluate", "dlkdd.pipeline.pretrain", "dlkdd.pipeline.enhancer", "dlkdd.cache.store",
    "dlkdd.data.check", "dlkdd.deploy.export", "stop_at",
]
_SERVER = None
_LIVE: set = set()


@atexit.register  # runs before multiprocessing's own exit handler, which would join (and wait for) them
def _kill_leftovers() -> None:
    """SIGKILL commands a failed test left running (stopped ones too)."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)


def _server():
    """The forkserver context (started on first use; one per pytest worker)."""
    global _SERVER
    if _SERVER is None:
        import multiprocessing as mp

        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _SERVER = ctx
    return _SERVER


def _stream(fd: int, like) -> io.TextIOWrapper:
    """A text stream on ``fd`` encoded as the interpreter's own ``like`` stream, unbuffered as with
    PYTHONUNBUFFERED=1 (env()): what a command wrote before a SIGKILL is in the file."""
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=getattr(like, "encoding", None) or "utf-8",
                            errors=getattr(like, "errors", None) or "strict", line_buffering=True,
                            write_through=True)


def _command(args: list[str], cwd: str, environ: dict[str, str], out: str, err: str,
             stop_at: tuple[str, int] | None, unprivileged: bool, fsize: int | None = None) -> None:
    """Body of a forked command: ``python -m dlkdd ARGS`` without the interpreter start."""
    for fd, path in ((1, out), (2, err)):  # first, so that whatever fails below is in the test's files
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout, sys.stderr = _stream(1, sys.__stdout__), _stream(2, sys.__stderr__)
    import multiprocessing

    multiprocessing.set_start_method(None, force=True)  # the platform's default, as in a fresh interpreter
    if unprivileged:
        drop_dac_capabilities()
    if fsize is not None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(fsize), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    sys.argv = [str(Path(REPO, "dlkdd", "__main__.py")), *args]
    import torch

    # what OMP_NUM_THREADS gives a fresh interpreter (the server imported torch under the worker's settings)
    torch.set_num_threads(int(environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    if stop_at is not None:
        import stop_at as hooks

        hooks.install(stop_at[0], int(stop_at[1]))
    from dlkdd.cli import main

    main(args=args, prog_name="dlkdd")  # raises SystemExit(rc); multiprocessing exits with rc


class _Forked:
    """A forked command with the parts of ``subprocess.Popen`` the tests use."""

    def __init__(self, args: Sequence, cwd: Path, out: Path, err: Path, stop_at: tuple[str, int] | None = None,
                 unprivileged: bool = False, fsize: int | None = None):
        """Start ``dlkdd ARGS``; ``out`` and ``err`` are (re)created empty and receive fds 1 and 2."""
        self.args = [str(a) for a in args]
        out.write_text("")
        err.write_text("")
        self._p = _server().Process(target=_command, args=(self.args, str(cwd), env(), str(out), str(err), stop_at,
                                                           unprivileged, fsize), daemon=False)
        self._p.start()
        self.pid = self._p.pid
        self.returncode: int | None = None
        _LIVE.add(self)

    def send_signal(self, sig: int) -> None:
        """Signal the command if it still runs (the forkserver reaps it at once when it ends)."""
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def poll(self) -> int | None:
        if self.returncode is None and not self._p.is_alive():
            self._p.join()
            self.returncode = self._p.exitcode
            _LIVE.discard(self)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._p.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(["dlkdd", *self.args], timeout)
        return self.returncode


def cli(args: Sequence[str], cwd: Path | None = None, timeout: float = 300,
        unprivileged: bool = False, fsize: int | None = None) -> subprocess.CompletedProcess:
    """Run ``dlkdd ARGS`` to completion; returns the CompletedProcess (text stdout/stderr).

    Forked from the command server (see the module docstring). ``unprivileged``: permission bits
    apply to the command even when the tests run as root (:func:`drop_dac_capabilities`).
    ``fsize``: the command's file-size limit in bytes (a write past it fails with EFBIG).
    """
    with tempfile.TemporaryDirectory(prefix="dlkdd-cli-") as d:
        out, err = Path(d, "out"), Path(d, "err")
        proc = _Forked(args, cwd or REPO, out, err, unprivileged=unprivileged, fsize=fsize)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            raise
        return subprocess.CompletedProcess(["dlkdd", *proc.args], rc, out.read_text(), err.read_text())


class Job:
    """A ``dlkdd`` command running in the background; its output goes to files (no pipe stalls)."""

    def __init__(self, args: Sequence[str], logdir: Path, name: str, cwd: Path | None = None,
                 stop_at: tuple[str, int] | None = None):
        """``stop_at=(POINT, N)``: the command freezes itself there (tests/stop_at.py); see :meth:`wait_stopped`."""
        logdir.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logdir / f"{name}.out", logdir / f"{name}.err"
        self.proc = _Forked(args, cwd or REPO, self.out_path, self.err_path, stop_at)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

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
        return self.proc.wait(timeout=timeout)

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


#: CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (linux/capability.h): what lets root ignore permission bits
_DAC_CAPS = (1, 2)
_CAP_SETPCAP = 8  # needed to drop a capability from the bounding set


def _mask(caps) -> int:
    return sum(1 << cap for cap in caps)


def can_enforce_permissions() -> bool:
    """True if a command run with ``cli(..., unprivileged=True)`` is refused what permission bits refuse.

    Always for a normal user; for root when it holds the two capabilities that bypass permission
    bits and CAP_SETPCAP, which :func:`drop_dac_capabilities` needs to take them away for good.
    """
    if os.geteuid() != 0:
        return True
    try:
        _, _, data = _capabilities()
    except (OSError, AttributeError):
        return False
    need = _mask((*_DAC_CAPS, _CAP_SETPCAP))
    return data[0].effective & need == need


def skip_unless_permissions_enforced() -> None:
    """pytest.skip the calling test where :func:`can_enforce_permissions` is False."""
    import pytest

    if not can_enforce_permissions():
        pytest.skip("running as root without the capabilities to drop CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH "
                    "(capget, CAP_SETPCAP): permission bits cannot be enforced")


def _capabilities():
    import ctypes
    import ctypes.util

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    hdr, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    if libc.capget(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    return libc, hdr, data


def drop_dac_capabilities() -> None:
    """Make permission bits apply to this process even as root (in a forked command, before it runs).

    Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the effective, permitted and inheritable
    sets and from the bounding set (so a program the command executes cannot regain them): what
    ``setpriv --bounding-set=-dac_override,-dac_read_search python ...`` gives an exec'd command.
    """
    import ctypes

    if os.geteuid() != 0:
        return
    libc, hdr, data = _capabilities()
    for cap in _DAC_CAPS:
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP (needs CAP_SETPCAP: drop it first)
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap}) failed")
    keep = ~_mask(_DAC_CAPS) & 0xFFFFFFFF
    data[0].effective &= keep
    data[0].permitted &= keep
    data[0].inheritable &= keep
    if libc.capset(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


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
