"""A training run's claim on its output directory, checked before any work (``claim_run_dir``).

Every training stage (``teacher``, ``student``, ``pretrain``) enters ``claim_run_dir(cfg, OUT, ...)``
before it reads a clip. In order:

1. OUT can be written (:func:`dlkdd.outputs.check_writable_dir`: a real probe file);
2. OUT is locked for this run (:class:`dlkdd.cache.lock.WriterLock` on ``OUT/run.lock``, held to the
   end; a second run on the same OUT is refused with the holder's pid, and the lock file is removed
   when the run ends);
3. without ``--resume``, OUT must not hold a run already (``last.pt`` or the deliverable): refused,
   naming ``--resume OUT`` and how to start over, instead of silently replacing its checkpoint;
4. with ``--resume``, the checkpoint must exist; once it is loaded (:func:`dlkdd.train.fit.fit` calls
   :func:`check_resume_config`, after the weights are found to fit), the resolved config stored in it must
   equal this one except for the keys in :data:`RESUME_MAY_CHANGE` (settings that cannot change
   what is computed) and, under a ``constant`` or ``step`` schedule, a larger ``train.epochs``
   (:func:`epochs_may_grow`: those schedules depend on the step index only, so the longer run is
   the run that would have been trained from the start); every other difference is named. Under
   ``cosine`` more epochs are refused: its curve is a function of the total and the old one ends at
   lr 0; start a new run with more epochs instead;
5. one training batch fits in memory: :func:`estimate_batch_bytes` against ``MemAvailable``
   (``/proc/meminfo``), naming ``clip.frames``, ``clip.size`` and ``train.batch_size``.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from dlkdd.cache.lock import WriterLock
from dlkdd.errors import CacheError, CheckpointError, ResourceError, OutputError
from dlkdd.outputs import check_writable_dir

log = logging.getLogger(__name__)

__all__ = ["RESUME_MAY_CHANGE", "RESUME_SAME_EXTRA", "claim_run_dir", "config_differences", "epochs_may_grow",
           "check_resume_config",
           "check_resume_extra", "copy_checkpoint", "copy_finished_run",
           "estimate_batch_bytes", "mem_available_bytes", "check_batch_memory"]

#: Config keys a ``--resume`` may change: they do not change what the run computes.
RESUME_MAY_CHANGE = ("train.workers", "cache.dir", "cache.batch_size", "name")

#: Host-memory multiple of one float32 training batch: the batches the loader holds (the batch in
#: use, the next, ``prefetch_factor`` = 2 per worker) plus, on CPU, the model's stored activations
#: for the backward pass (an R(2+1)D trunk keeps about 30 input-sized tensors).
_LOADER_BATCHES = 2
_CPU_ACTIVATIONS = 30


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any],
                       allowed: tuple[str, ...] = RESUME_MAY_CHANGE) -> list[str]:
    """``["clip.size: 32 in the checkpoint, 24 now", ...]`` for every differing key not in ``allowed``.
    A key the checkpoint lacks (written before that setting existed) counts as its default value."""
    from dlkdd.config import Config

    a, b = _flat(old or {}), _flat(new or {})
    defaults = _flat(Config().to_dict())
    out = []
    for k in sorted(set(a) | set(b)):
        if k in allowed:
            continue
        va, vb = a.get(k, defaults.get(k, "<absent>")), b.get(k, "<absent>")
        if va != vb:
            out.append(f"{k}: {va!r} in the checkpoint, {vb!r} now")
    return out


def epochs_may_grow(old: Mapping[str, Any], cfg: Any) -> bool:
    """True when a resumed run may train for more epochs than it started with: the LR factor of a
    ``constant`` or ``step`` schedule depends only on the step index (:class:`dlkdd.train.optim.LRSchedule`),
    never on the total, as long as the warm-up was not cut short by the old total. A ``cosine``
    schedule is a function of the total: the old run's curve ends at lr 0, so more epochs would run at
    lr 0 (or jump back up); refused."""
    t_old = (old.get("train") or {}) if isinstance(old, Mapping) else {}
    try:
        before = int(t_old.get("epochs"))
    except (TypeError, ValueError):
        return False
    return (int(cfg.train.epochs) > before and cfg.train.schedule in ("constant", "step")
            and int(cfg.train.warmup_epochs) <= before)


def check_resume_config(ckpt: Mapping[str, Any], cfg: Any, path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` when ``cfg`` differs from the config the run was started with
    (besides :data:`RESUME_MAY_CHANGE`, ``train.epochs`` may grow under :func:`epochs_may_grow`)."""
    old = ckpt.get("config") or {}
    allowed = RESUME_MAY_CHANGE + (("train.epochs",) if epochs_may_grow(old, cfg) else ())
    diffs = config_differences(old, cfg.to_dict(), allowed)
    if any(d.startswith("train.epochs:") for d in diffs):
        diffs = [d + (" (more epochs need train.schedule constant or step: a cosine schedule ends at lr 0 "
                      "after the epochs it started with)" if d.startswith("train.epochs:") else "") for d in diffs]
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; ... ({len(diffs) - 6} more)" if len(diffs) > 6 else "")
        raise CheckpointError(
            f"--resume {path}: the settings differ from the interrupted run's ({shown}). A resumed run must "
            f"use the settings it started with (only {', '.join(RESUME_MAY_CHANGE)} may change); drop the "
            f"changed --set options, or start a new run in another --out")


#: ``extra`` facts of a run that a resume must not change (the cached teacher(s) it distils from).
RESUME_SAME_EXTRA = ("teacher_sha256", "cache_weights", "skipped_keys")


def check_resume_extra(ckpt: Mapping[str, Any], extra: Mapping[str, Any] | None, path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` when the run's inputs outside the config changed (e.g. ``--cache``
    names a store of another teacher)."""
    old, new = ckpt.get("extra") or {}, dict(extra or {})
    diffs = []
    for k in RESUME_SAME_EXTRA:
        a, b = old.get(k), new.get(k)
        a = list(a) if isinstance(a, tuple) else a
        b = list(b) if isinstance(b, tuple) else b
        if (a or b) and a != b:
            diffs.append(f"{k}: {_short(a)} in the checkpoint, {_short(b)} now")
    if diffs:
        hint = f" (the run used --cache {old.get('cache')})" if old.get("cache") else ""
        raise CheckpointError(f"--resume {path}: the run's inputs differ ({'; '.join(diffs)}){hint}; resume with "
                              f"the same inputs, or start a new run in another --out")


def _short(v: Any) -> str:
    if isinstance(v, str) and len(v) == 64:
        return v[:12]
    if isinstance(v, list) and len(v) > 4:
        return f"{v[:4]}... ({len(v)})"
    return repr(v)


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Atomically copy a checkpoint file (a finished run resumed into another ``--out``)."""
    import shutil

    from dlkdd.utils import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def copy_finished_run(src_checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """A finished run resumed into another ``--out``: copy its ``last.pt`` and its test clips'
    ``predictions.jsonl`` (the same final weights; ``run`` names the new directory) there, so that
    ``dlkdd compare`` reads the new run as it reads the old one."""
    from dlkdd.predictions import PREDICTIONS_FILE, read_predictions, write_predictions

    src, out_dir = Path(src_checkpoint), Path(out_dir)
    if not (out_dir / "last.pt").exists():
        copy_checkpoint(src, out_dir / "last.pt")
    preds = src.parent / PREDICTIONS_FILE
    if preds.is_file() and not (out_dir / PREDICTIONS_FILE).exists():
        p = read_predictions(preds)
        p.meta["run"] = str(out_dir)
        write_predictions(out_dir / PREDICTIONS_FILE, p)
    elif not preds.is_file():
        log.warning("%s has no %s: `dlkdd compare` cannot read %s (evaluate it with `dlkdd evaluate "
                    "--predictions`)", src.parent, PREDICTIONS_FILE, out_dir)


def estimate_batch_bytes(cfg: Any, device: Any = "cpu") -> int:
    """Host bytes one training batch needs (estimate): ``batch * 3 * T * S * S * 4`` (float32 clips)
    times the batches the loader holds, plus the model's stored activations when training on CPU."""
    per_batch = int(cfg.train.batch_size) * 3 * int(cfg.clip.frames) * int(cfg.clip.size) ** 2 * 4
    factor = _LOADER_BATCHES + 2 * int(cfg.train.workers)
    if str(getattr(device, "type", device)).split(":")[0] == "cpu":
        factor += _CPU_ACTIVATIONS
    return per_batch * factor


def mem_available_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_batch_memory(cfg: Any, device: Any = "cpu", available: int | None = None) -> None:
    """Refuse clip/batch settings whose training batch cannot fit in this machine's free memory."""
    need = estimate_batch_bytes(cfg, device)
    have = available if available is not None else mem_available_bytes()
    if have is None or need <= have:
        return
    gib = 2 ** 30
    raise ResourceError(
        f"clip.frames={cfg.clip.frames}, clip.size={cfg.clip.size}, train.batch_size={cfg.train.batch_size}: a "
        f"training batch needs about {need / gib:.1f} GiB of memory (estimate), this machine has "
        f"{have / gib:.1f} GiB available; lower clip.frames, clip.size or train.batch_size")


def _ckpt_path(resume: str | os.PathLike) -> Path:
    p = Path(resume)
    return p / "last.pt" if p.is_dir() or not p.suffix else p


@contextmanager
def claim_run_dir(cfg: Any, out_dir: str | os.PathLike, *, kind: str, resume: str | os.PathLike | None = None,
                  filename: str | None = None, is_main: bool = True, device: Any = "cpu") -> Iterator[Path]:
    """Check and lock ``out_dir`` for one training run (module docstring); yields it as a Path."""
    from dlkdd.errors import DlkddError
    from dlkdd.train import distributed as ddp

    out = Path(out_dir)
    lock = WriterLock(out / "run", what=f"run directory {out}") if is_main else None
    refusal: DlkddError | None = None
    try:  # rank 0 decides; under torchrun every rank then stops together (no rank left in a collective)
        check_writable_dir(out, "--out")
        if lock is not None:
            try:
                lock.acquire()
            except CacheError as e:
                raise OutputError(str(e).replace("remove the stale lock file", "use another --out; or remove")) \
                    from None
        final = out / (filename or f"{kind}.pt")
        if resume is None:
            held = [p.name for p in (out / "last.pt", final) if p.exists()]
            if held:
                raise OutputError(
                    f"--out {out} already holds a run ({', '.join(held)}); continue it with --resume {out}, "
                    f"or start over in another --out (or delete {out} first)")
        else:
            path = _ckpt_path(resume)
            if not path.exists():
                raise CheckpointError(f"--resume {resume}: no last.pt there ({path.absolute()}); nothing to "
                                      f"resume (start without --resume)")
        check_batch_memory(cfg, device)
    except DlkddError as e:
        refusal = e
    refusal = ddp.broadcast_object(refusal if is_main else None) if ddp.is_distributed() else refusal
    if refusal is not None:
        if lock is not None:
            lock.release()
        raise refusal
    try:
        yield out
    finally:
        if lock is not None:
            lock.release()
