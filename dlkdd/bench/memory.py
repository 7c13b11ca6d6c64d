"""Peak memory of a benchmark variant.

CPU: the peak resident set size (``VmHWM`` of ``/proc/self/status``) of a *fresh Python
process* that imports torch, builds only what the variant needs and runs its steps
(:mod:`dlkdd.bench.memprobe`). A fresh process per variant is needed because the allocator
keeps freed memory: measured in one process, a variant run after another would reuse its pages
and look cheaper. The figure includes the interpreter and torch's own footprint (reported
separately as ``base_rss_mb``, measured after the imports).

CUDA: ``torch.cuda.max_memory_allocated`` after a reset, in-process (the caching allocator
reports live tensor bytes, so order does not matter).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["rss_mb", "peak_rss_mb", "run_probe"]


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float | None:
    """Current resident set size (MiB), or None where /proc is absent."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process (MiB): ``VmHWM``, else ``getrusage`` maxrss."""
    kb = _status_kb("VmHWM")
    if kb is None:
        try:
            import resource

            kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        except (ImportError, OSError):
            return None
    return kb / 1024.0


def run_probe(spec: dict[str, Any], timeout: float = 1800.0) -> dict[str, Any]:
    """Run :mod:`dlkdd.bench.memprobe` with ``spec`` in a fresh process; its JSON result."""
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "dlkdd.bench.memprobe", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"memory probe {spec.get('variant')} failed (exit {proc.returncode}): " + " | ".join(tail))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"memory probe {spec.get('variant')} printed no result: {proc.stdout[-300:]}")
    return json.loads(lines[-1])
