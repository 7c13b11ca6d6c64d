"""Self-contained training checkpoints: atomic save, safe load, compatibility checks.

A checkpoint is a dict saved with ``torch.save`` and loaded with ``torch.load(weights_only=True)``
(no pickled code is ever executed). Fields (docs/INTERNALS.md): ``schema_version``,
``dlkdd_version``, ``kind`` (teacher | student | baseline | pretrain | enhancer), ``arch`` (enough to
rebuild the model), ``config`` (resolved dict), ``classes``, ``model`` (state dict), ``enhancer``
(state dict or None), ``optimizer``, ``scheduler``, ``epoch`` (0-based index of the last completed
epoch), ``rng``, ``metrics``, ``history``, ``best_top1``, ``extra``, ``train_state`` (``last.pt`` only:
the state of what trains beside the model and is not part of it, e.g. the feature term's projector,
:meth:`dlkdd.models.projector.ProjectedStudent.train_state_dict`; None otherwise).

Everything stored must be weights_only-loadable: tensors, str/int/float/bool/None, lists, tuples,
dicts. :func:`to_plain` converts numpy arrays/scalars and paths; :func:`get_rng_state` returns the
torch/CUDA/numpy/python RNG states in that form and :func:`set_rng_state` restores them.

Resume: :func:`resume_state` loads a run's ``last.pt`` into model, optimizer and scheduler and
restores the RNG states; :func:`remove_torn_files` deletes what a killed write left behind;
:func:`write_final` writes the run's deliverable (``teacher.pt`` / ``student.pt`` ...): the last
checkpoint without optimiser state.
"""
from __future__ import annotations

import logging
import os
import pickle
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from dlkdd import __version__
from dlkdd.errors import CheckpointError
from dlkdd.models.weights import load_error_reason, weights_mismatch
from dlkdd.utils import atomic_path

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CHECKPOINT_FIELDS = ("schema_version", "dlkdd_version", "kind", "arch", "config", "classes", "model",
                     "enhancer", "optimizer", "scheduler", "epoch", "rng", "metrics", "history",
                     "best_top1", "extra", "train_state")
KINDS = ("teacher", "student", "baseline", "pretrain", "enhancer")

__all__ = ["SCHEMA_VERSION", "CHECKPOINT_FIELDS", "save_checkpoint", "load_checkpoint", "check_compatible",
           "get_rng_state", "set_rng_state", "to_plain", "resume_state", "remove_torn_files", "write_final"]


def _other_copy_hint(path: Path) -> str:
    """``", or use DIR/best.pt"`` when the run's other checkpoint is a different, existing file.

    ``best.pt`` is a hard link to its epoch's ``last.pt`` (see :func:`dlkdd.utils.atomic_link`), so
    while the best epoch is the last one they are the same file and corrupt together.
    """
    other = {"last.pt": "best.pt", "best.pt": "last.pt"}.get(path.name)
    if other is None or not (path.parent / other).is_file():
        return ""
    try:
        if os.path.samefile(path, path.parent / other):
            return ""
    except OSError:  # pragma: no cover - vanished meanwhile
        return ""
    return f", or resume/evaluate from {path.parent / other}"


def to_plain(obj: Any) -> Any:
    """Recursively convert ``obj`` to types ``torch.load(weights_only=True)`` accepts.

    numpy arrays -> tensors, numpy scalars -> Python numbers, paths -> str; containers recurse.
    """
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj)).clone()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dict):
        return {(k if isinstance(k, (str, int)) else str(k)): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [to_plain(v) for v in obj]
        return tuple(out) if isinstance(obj, tuple) else out
    if isinstance(obj, (torch.dtype, torch.device, torch.Size)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (weights_only load): {obj!r:.80}")


def get_rng_state() -> dict[str, Any]:
    """The torch CPU, CUDA (all devices, if any), numpy global and python ``random`` states."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"name": str(np_state[0]), "keys": [int(k) for k in np_state[1]], "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("checkpoint holds CUDA RNG states of %d devices, this machine has %d: not restored",
                        len(cuda), torch.cuda.device_count())
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    v, s, g = state["python"]
    random.setstate((v, tuple(s), g))


def save_checkpoint(path: str | os.PathLike, **fields: Any) -> Path:
    """Save ``fields`` (see the module docstring) atomically to ``path``.

    ``schema_version`` and ``dlkdd_version`` are filled in. A kill during the save leaves the
    previous file intact. Returns the path.
    """
    unknown = sorted(set(fields) - set(CHECKPOINT_FIELDS))
    if unknown:
        raise ValueError(f"save_checkpoint: unknown field(s) {unknown}; put free-form data under extra=")
    ckpt = {"schema_version": SCHEMA_VERSION, "dlkdd_version": __version__}
    ckpt.update({k: to_plain(v) for k, v in fields.items() if k not in ("schema_version", "dlkdd_version")})
    path = Path(path)
    with atomic_path(path, needed=tensor_bytes(ckpt)) as tmp:
        torch.save(ckpt, tmp)
    log.debug("saved checkpoint %s", path)
    return path


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (nested dicts/lists): about the size of its checkpoint file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def _refuse_other_file_kinds(path: Path) -> None:
    """A JSON file or an exported model given as a checkpoint: say what it is (not "corrupt")."""
    from dlkdd.deploy.runtime import detect_format

    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head[:1] in (b"{", b"["):
        raise CheckpointError(f"{path}: is a JSON file (e.g. metrics.json or an export's spec), not a checkpoint; "
                              f"give the run's .pt file (e.g. student.pt)")
    fmt = detect_format(path)
    if fmt is not None:
        raise CheckpointError(f"{path}: is a model exported to {fmt} by `dlkdd export`, not a checkpoint; this step "
                              f"needs the checkpoint it was exported from (evaluate and predict take both)")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a dlkdd checkpoint with ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` for a missing file, a truncated or corrupt file, a file that
    is not a dlkdd checkpoint, or a newer schema than this dlkdd supports.
    """
    path = Path(path)
    try:
        os.stat(path)
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied (a directory above it may not be entered)") from None
    except OSError:
        pass
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file (e.g. {path / 'last.pt'})")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found; check the path or train one first")
    _refuse_other_file_kinds(path)
    try:
        with warnings.catch_warnings():  # torch's note on legacy (non-zip) pickles; the error below says it all
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path}: truncated or corrupt checkpoint (not a torch zip archive, {path.stat().st_size} bytes); "
                f"re-run the step that wrote it{_other_copy_hint(path)}") from None
        raise CheckpointError(f"{path}: not a dlkdd checkpoint, or a tampered one: {load_error_reason(e)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint ({size} bytes; {type(e).__name__}: "
            f"{_first_sentence(str(e))}); re-run the step that wrote it"
            f"{_other_copy_hint(path)}") from None
    if not isinstance(ckpt, dict) or "schema_version" not in ckpt or "dlkdd_version" not in ckpt:
        what = f"a dict with keys {sorted(map(str, ckpt))[:8]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: not a dlkdd checkpoint ({what}); a published R(2+1)D state dict goes in "
            f"model.pretrained instead")
    sv = ckpt["schema_version"]
    if not isinstance(sv, int) or sv > SCHEMA_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint schema {sv} written by dlkdd {ckpt.get('dlkdd_version')}; this dlkdd "
            f"({__version__}) reads schema <= {SCHEMA_VERSION}: upgrade dlkdd")
    for k in CHECKPOINT_FIELDS:
        ckpt.setdefault(k, None)
    return ckpt


def _first_sentence(text: str, limit: int = 160) -> str:
    """The first sentence of an exception's text, whole words only (never cut mid-word)."""
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    line = line.split(". ")[0].rstrip(".")
    if len(line) > limit:
        line = line[:limit].rsplit(" ", 1)[0] + " ..."
    return line


def _num_classes(ckpt: dict[str, Any]) -> int | None:
    arch = ckpt.get("arch") or {}
    if isinstance(arch, dict) and arch.get("num_classes") is not None:
        return int(arch["num_classes"])
    if ckpt.get("classes"):
        return len(ckpt["classes"])
    return None


def check_compatible(ckpt: dict[str, Any], kind: str | Iterable[str] | None = None, num_classes: int | None = None,
                     arch: dict[str, Any] | None = None, path: str | os.PathLike | None = None) -> None:
    """Raise :class:`CheckpointError` naming every difference between ``ckpt`` and what is expected.

    ``kind``: one kind or several allowed ones; ``num_classes``: expected class count;
    ``arch``: expected architecture dict (every key given must match the checkpoint's).
    """
    where = f"{path}: " if path is not None else "checkpoint: "
    problems = []
    if kind is not None:
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        if ckpt.get("kind") not in kinds:
            problems.append(f"kind is {ckpt.get('kind')!r}, expected {' or '.join(map(repr, kinds))}")
    if num_classes is not None:
        have = _num_classes(ckpt)
        if have != num_classes:
            problems.append(f"class count is {have}, the data has {num_classes}")
    if arch is not None:
        have_arch = ckpt.get("arch") or {}
        for k in sorted(arch):
            a, b = have_arch.get(k, "<missing>"), arch[k]
            if isinstance(a, tuple):
                a = list(a)
            if isinstance(b, tuple):
                b = list(b)
            if a != b:
                problems.append(f"architecture '{k}' is {a!r}, expected {b!r}")
    if problems:
        raise CheckpointError(where + "; ".join(problems))


def _arch_hint(arch: Any) -> str:
    if not isinstance(arch, dict):
        return ""
    return (f". The checkpoint is a {arch.get('backbone')} with a {arch.get('head')} head and "
            f"{arch.get('num_classes')} classes: resume with the model settings it was trained with")


def resume_state(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 scheduler: Any = None, kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint (``path`` a file or a run directory holding ``last.pt``) into ``model`` (not
    DDP-wrapped), ``optimizer`` and ``scheduler``; restore the RNG states. Returns
    ``dict(start_epoch, history, best_top1, best_epoch, ckpt, path)``."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    ckpt = load_checkpoint(path)
    check_compatible(ckpt, kind=kind, path=path)
    report = weights_mismatch(model.state_dict(), ckpt["model"] if isinstance(ckpt["model"], dict) else {})
    if report:
        raise CheckpointError(f"{path}: model weights do not fit this model: {report}{_arch_hint(ckpt.get('arch'))}")
    model.load_state_dict(ckpt["model"])
    if ckpt.get("train_state") is not None and hasattr(model, "load_train_state_dict"):
        model.load_train_state_dict(ckpt["train_state"])  # e.g. the feature term's projector: exact resume
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("rng") is not None:
        set_rng_state(ckpt["rng"])
    extra = ckpt.get("extra") or {}
    epoch = ckpt.get("epoch")
    log.info("resuming from %s after epoch %s", path, epoch)
    return {"start_epoch": (int(epoch) + 1) if epoch is not None else 0, "history": list(ckpt.get("history") or []),
            "best_top1": ckpt.get("best_top1"), "best_epoch": extra.get("best_epoch"), "ckpt": ckpt, "path": path}


def remove_torn_files(out_dir: str | os.PathLike) -> None:
    """Delete the temporary files (``.last.pt.*.tmp`` ...) a killed run left in ``out_dir``.

    :func:`dlkdd.utils.atomic_path` writes beside the target and renames; a kill mid-write leaves
    the previous good file plus a torn temporary one, which is garbage (often hundreds of MB).
    """
    for tmp in Path(out_dir).glob(".*.tmp"):
        try:
            tmp.unlink()
            log.info("removed %s, left by an interrupted write", tmp)
        except OSError:  # pragma: no cover - gone already
            pass


def write_final(out_dir: str | os.PathLike, filename: str) -> Path:
    """``OUT/<filename>``: the run's ``last.pt`` without optimiser, scheduler and RNG state."""
    out_dir = Path(out_dir)
    last = load_checkpoint(out_dir / "last.pt")
    for k in ("optimizer", "scheduler", "rng"):
        last[k] = None
    return save_checkpoint(out_dir / filename, **last)
