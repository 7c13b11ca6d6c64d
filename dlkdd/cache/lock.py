"""Exclusive writer lock for a logit store: ``fcntl.flock`` on ``<store>.lock`` beside it.

Only one process may build (write) a given store at a time. The lock is an advisory
``flock(2)`` lock on a small file next to the store (``cache/x.zarr`` -> ``cache/x.zarr.lock``);
the holder writes its pid (and host) into that file so a refused writer can say who holds it.
The holder deletes the lock file when it releases the lock (no stale ``X.zarr.lock`` beside a
finished store); a waiter that then gets the lock on the deleted file sees that the path now names
another file (or none) and tries again on the current one, so two holders can never coexist.
``what`` names the locked thing in the refusal (a store, or a run directory: ``dlkdd/train/rundir.py``).

Why ``flock``: the kernel drops the lock when the holding process dies, however it dies
(SIGKILL included), so a crashed precompute never blocks the next one forever; the lock file
of a killed holder stays behind (harmless, reused by the next writer).
``flock`` is not reliable on some network file systems (older NFS); keep caches on local disk.

Sharded multi-process precompute writes disjoint rows of one Zarr store concurrently: each
shard takes its own lock with ``tag="shard<k>"`` (``<store>.shard<k>.lock``) so two runs of the
*same* shard are refused while different shards proceed.

This module imports only the standard library (``dlkdd --help`` and lock-only callers stay light).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from typing import IO

from dlkdd.errors import CacheError

__all__ = ["WriterLock", "lock_path"]

log = logging.getLogger(__name__)


def lock_path(store_path: str | os.PathLike, tag: str = "") -> Path:
    """``<store>.lock`` (or ``<store>.<tag>.lock``) beside the store."""
    p = Path(store_path)
    suffix = f".{tag}.lock" if tag else ".lock"
    return p.with_name(p.name.rstrip("/") + suffix)


class WriterLock:
    """Exclusive, process-level writer lock on a store.

    ``wait=False`` (default): fail at once with :class:`CacheError` if another process holds it.
    ``wait=True``: block until it is free, or until ``timeout`` seconds (None: forever) and then
    raise :class:`CacheError`. Use as a context manager or call :meth:`acquire` / :meth:`release`.
    Not re-entrant, and not meant to be shared across ``fork``.
    """

    def __init__(self, store_path: str | os.PathLike, wait: bool = False, timeout: float | None = None,
                 tag: str = "", poll_s: float = 0.1, what: str | None = None):
        self.store_path = Path(store_path)
        self.what = what or f"store {self.store_path}"
        self.path = lock_path(store_path, tag)
        self.wait = wait
        self.timeout = timeout
        self.poll_s = poll_s
        self._fh: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def _holder(self) -> str:
        try:
            text = self.path.read_text().strip()
        except OSError:
            text = ""
        return text or "unknown pid"

    def _refuse(self, waited: float | None) -> CacheError:
        how = f" after waiting {waited:.1f} s" if waited is not None else ""
        return CacheError(
            f"{self.what} is being written by another process ({self._holder()}){how}; "
            f"wait for it or remove the stale lock file {self.path}"
        )

    def acquire(self) -> "WriterLock":
        if self._fh is not None:
            raise CacheError(f"lock {self.path} is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        while True:
            fh = self._lock_once(t0)
            if self._still_current(fh):
                break
            fh.close()  # the previous holder deleted the file we locked: lock the current one
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        self._fh = fh
        log.debug("acquired writer lock %s", self.path)
        return self

    def _still_current(self, fh: IO[str]) -> bool:
        """True when the locked file is still the one at ``self.path`` (not deleted by its last holder)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        own = os.fstat(fh.fileno())
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    def _lock_once(self, t0: float) -> IO[str]:
        # "a+": never truncate a file another process may hold before we own the lock.
        try:
            fh = open(self.path, "a+")
        except OSError as e:
            raise CacheError(f"cannot create the lock file {self.path}: {e.strerror or e}") from None
        try:
            while True:
                try:
                    if self.wait and self.timeout is None:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                    else:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise CacheError(f"cannot lock {self.path}: {e}") from None
                    if not self.wait:
                        raise self._refuse(None) from None
                    waited = time.monotonic() - t0
                    if self.timeout is not None and waited >= self.timeout:
                        raise self._refuse(waited) from None
                    time.sleep(self.poll_s)
        except BaseException:
            fh.close()
            raise
        return fh

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            if self._still_current(fh):
                os.unlink(self.path)  # while still holding it: a waiter re-checks the path (acquire)
        except OSError:  # pragma: no cover - best effort
            pass
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()
        log.debug("released writer lock %s", self.path)

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - safety net
        try:
            self.release()
        except Exception:
            pass
