"""WriterLock: one writer at a time, a clear refusal naming the holder, recovery after SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dlkdd.cache.lock import WriterLock, lock_path
from dlkdd.errors import CacheError

REPO = Path(__file__).resolve().parents[1]

_HOLDER = (
    "import sys, time\n"
    "from dlkdd.cache.lock import WriterLock\n"
    "lock = WriterLock(sys.argv[1]).acquire()\n"
    "print('locked', flush=True)\n"
    "time.sleep(120)\n"
)


def test_lock_path_beside_store(tmp_path):
    assert lock_path(tmp_path / "x.zarr") == tmp_path / "x.zarr.lock"
    assert lock_path(tmp_path / "x.h5", tag="shard1") == tmp_path / "x.h5.shard1.lock"


def test_second_writer_refused_until_holder_killed(tmp_path):
    store = tmp_path / "s.zarr"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(store)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"locked", proc.stderr.read().decode()
        with pytest.raises(CacheError) as e:
            WriterLock(store).acquire()
        msg = str(e.value)
        assert f"pid {proc.pid}" in msg and "being written by another process" in msg and "s.zarr.lock" in msg
        t0 = time.monotonic()
        with pytest.raises(CacheError, match="after waiting"):
            WriterLock(store, wait=True, timeout=0.3, poll_s=0.05).acquire()
        assert time.monotonic() - t0 >= 0.3
        # another shard's lock on the same store is independent
        with WriterLock(store, tag="shard1") as other:
            assert other.held
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    # the kernel released the dead holder's flock: the lock can be taken at once
    with WriterLock(store) as lock:
        assert lock.held and lock_path(store).read_text().startswith(f"pid {os.getpid()}")
    assert not lock.held


def test_wait_acquires_when_released(tmp_path):
    store = tmp_path / "s.h5"
    first = WriterLock(store).acquire()
    with pytest.raises(CacheError, match=f"pid {os.getpid()}"):
        WriterLock(store).acquire()  # flock conflicts between open files even within one process
    threading.Timer(0.2, first.release).start()
    with WriterLock(store, wait=True, timeout=10, poll_s=0.02) as second:
        assert second.held and not first.held
