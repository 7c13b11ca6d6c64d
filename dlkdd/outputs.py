"""Output locations checked before any work: can this process write there, and is it not an input?

``check_writable_dir(path, what)`` creates ``path`` (and parents) if needed and writes then deletes
a probe file inside it; ``check_writable_file(path, what)`` does the same in the file's directory
and refuses a directory or an existing file that cannot be replaced. A real probe, not
``os.access``: root's override, read-only mounts, ACLs and full disks all show up the same way
the real write would meet them. Each failure is one :class:`~dlkdd.errors.OutputError` line naming
the option and the absolute path, raised before the first step of a stage, never after an epoch.

The one rule every writing command applies before any work, :func:`check_outputs`: **no output
may be an input or another output**. An output is an input when their real paths (symbolic links
and ``..`` resolved) are equal, or when both exist and are one inode (a hard link); two outputs are
one when their real paths are equal (outputs are replaced by rename, which splits hard links). A
directory output (a run's ``--out``) is checked through the files the command writes in it.
``check_not_input(out, inputs, what)`` is the one-output form.

:func:`disk_full` turns a failed write (no space left, the file-size limit of ``ulimit -f``, a
quota) into one :class:`~dlkdd.errors.OutputError` line naming the file and the space it needed;
:func:`dlkdd.utils.atomic_path` applies it, so the target keeps its previous contents.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from dlkdd.errors import OutputError

__all__ = ["check_writable_dir", "check_writable_file", "check_not_input", "check_outputs", "same_file",
           "disk_full"]


def _why(e: OSError) -> str:
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.EROFS:
        return "read-only file system"
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if e.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a directory"
    return e.strerror or type(e).__name__


def _probe(directory: Path, what: str, target: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".dlkdd-write-probe.", dir=directory)
    except OSError as e:
        raise OutputError(f"{what} {target.absolute()}: cannot write there ({_why(e)}); choose a writable "
                          f"location") from None
    os.close(fd)
    os.unlink(probe)


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create ``path`` if needed and prove a file can be written in it; returns it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} {p.absolute()}: is a file, expected a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{what} {p.absolute()}: cannot create the directory ({_why(e)}); choose a writable "
                          f"location") from None
    _probe(p, what, p)
    return p


def check_writable_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Prove ``path`` can be written (created or replaced by rename) without writing it; returns it."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{what} {p.absolute()}: is a directory, expected a file path")
    parent = p.parent if str(p.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{what} {p.absolute()}: cannot create its directory {parent.absolute()} ({_why(e)})") \
            from None
    _probe(parent, what, p)
    return p


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: equal real paths (links and ``..`` resolved), or one inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:  # one of them does not exist (yet): only the path can match
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_outputs(outputs: Mapping[str, str | os.PathLike | None],
                  inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Refuse (one :class:`OutputError` line) an output that is an input or another output.

    ``outputs``: ``{what: path}`` (``what`` names the option, e.g. ``"--json"``); None entries are
    skipped, as are None inputs.
    """
    outs = [(what, Path(p)) for what, p in outputs.items() if p is not None and str(p) != ""]
    ins = [Path(p) for p in inputs if p is not None and str(p) != ""]
    for k, (what, out) in enumerate(outs):
        for i in ins:
            if same_file(out, i):
                raise OutputError(f"{what} {out.absolute()} is also an input ({i}); writing it would destroy the "
                                  f"input: choose another output path")
        for other, o in outs[:k]:  # by path: outputs are replaced by rename, which splits hard links
            if os.path.realpath(out) == os.path.realpath(o):
                raise OutputError(f"{what} {out.absolute()} is also the output of {other}: one would overwrite the "
                                  f"other; give them different paths")


def check_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], what: str = "output") -> None:
    """Refuse ``out`` when it is (the same file as) one of ``inputs`` (:func:`check_outputs` for one output)."""
    check_outputs({what: out}, inputs)


#: errno of a write that ran out of room: no space, the file-size limit (ulimit -f), a disk quota
_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


#: what torch's C++ zip writer (torch.save, torch.jit.save) says when a write fails: it drops the errno
_TORCH_WRITE_FAILED = ("file write failed", "PytorchStreamWriter failed", "iostream error", "inline_container.cc")


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _FULL
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _TORCH_WRITE_FAILED)


def _size_limit() -> int | None:
    """This process's file-size limit (``ulimit -f``) in bytes, None when unlimited."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"about {n / scale:.1f} {unit}"
    return f"{n} bytes"


def disk_full(exc: BaseException, path: str | os.PathLike, needed: int | None = None) -> OutputError | None:
    """The one-line error for a write of ``path`` that ran out of room, or None for any other failure.

    ``needed``: the bytes the file needs (estimate), named in the message.
    """
    if not _is_full(exc):
        return None
    p = Path(path)
    try:
        free = f"; {shutil.disk_usage(p.parent if str(p.parent) else '.').free / 1e6:.0f} MB free there now"
    except OSError:
        free = ""
    limit = _size_limit()
    if getattr(exc, "errno", None) == errno.EFBIG or (limit is not None and (needed is None or needed > limit)):
        why = "the file-size limit (ulimit -f" + (f", {limit} bytes" if limit is not None else "") + ") was reached"
    else:
        why = "no space left on the device (or a disk quota reached)"
    need = f"; it needs {_size(needed)}" if needed is not None else ""
    return OutputError(f"cannot write {p.absolute()}: {why}{need}{free}. Nothing was replaced: free some space "
                       f"(or raise the limit) and run the command again")
