"""Output locations checked before any work: can this process write there, and is it not an input?

``check_writable_dir(path, what)`` creates ``path`` (and parents) if needed and writes then deletes
a probe file inside it; ``check_writable_file(path, what)`` does the same in the file's directory
and refuses a directory or an existing file that cannot be replaced. A real probe, not
``os.access``: root's override, read-only mounts, ACLs and full disks all show up the same way
the real write would meet them. Each failure is one :class:`~dlkdd.errors.OutputError` line naming
the option and the absolute path, raised before the first step of a stage, never after an epoch.

``check_not_input(out, inputs, what)``: refuse an output that is one of the inputs (``enhance
v.mp4 v.mp4`` would replace its own source).
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Iterable

from dlkdd.errors import OutputError

__all__ = ["check_writable_dir", "check_writable_file", "check_not_input"]


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


def check_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], what: str = "output") -> None:
    """Refuse ``out`` when it is (the same file as) one of ``inputs``."""
    o = Path(out)
    for i in inputs:
        i = Path(i)
        same = o.resolve() == i.resolve()
        if not same and o.exists() and i.exists():
            try:
                same = os.path.samefile(o, i)
            except OSError:
                same = False
        if same:
            raise OutputError(f"{what} {o.absolute()} is also an input; writing it would destroy the input: "
                              f"choose another output path")
