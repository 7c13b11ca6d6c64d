"""Make a ``dlkdd`` command freeze itself (SIGSTOP) at a named point, for the kill tests.

``faults.Job(..., stop_at=(POINT, N))`` calls :func:`install` in the forked command before it runs;
by hand, the same as a script:

    python tests/stop_at.py POINT N -- ARGS...

POINT, and where the process stops the N-th time it gets there:

- ``optimizer-step``: before an optimizer step (any optimizer: torch's global step pre-hook);
- ``replace:NAME``: in ``os.replace`` of a file named NAME, before the rename - the temporary file
  :func:`dlkdd.utils.atomic_path` wrote is complete on disk, the target still holds the old file;
- ``store-write``: after :meth:`dlkdd.cache.store.LogitStore.write_fields` returned (rows and their
  ``done`` flags written; ``write_many`` and ``write`` go through it).

The test waits for the stopped state (``faults.Job.wait_stopped``) and sends SIGKILL: the kill lands
exactly there, whatever the network's speed or the machine's load. Nothing here changes what the
command computes; the library has no test hooks.
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path


def _stop() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)


def install(point: str, n: int) -> None:
    calls = [0]

    def hit() -> bool:
        calls[0] += 1
        return calls[0] == n

    if point == "optimizer-step":
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        register_optimizer_step_pre_hook(lambda *_: _stop() if hit() else None)
    elif point.startswith("replace:"):
        name, real = point.split(":", 1)[1], os.replace

        def replace(src, dst, *a, **kw):
            if Path(dst).name == name and hit():
                _stop()
            return real(src, dst, *a, **kw)

        os.replace = replace
    elif point == "store-write":
        from dlkdd.cache.store import LogitStore

        real_write = LogitStore.write_fields

        def write_fields(self, *a, **kw):
            real_write(self, *a, **kw)
            if hit():
                _stop()

        LogitStore.write_fields = write_fields
    else:
        raise SystemExit(f"stop_at.py: unknown point {point!r}")


if __name__ == "__main__":
    point, n, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: stop_at.py POINT N -- ARGS..."
    install(point, int(n))
    sys.argv = ["dlkdd", *args]
    runpy.run_module("dlkdd", run_name="__main__", alter_sys=True)
