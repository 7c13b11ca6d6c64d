"""Teacher precompute throughput (``dlkdd cache-logits``) for K = 1 and K = 8 stored views.

A teacher checkpoint in the format ``dlkdd teacher`` writes (kind ``teacher``, ``arch`` from
:func:`dlkdd.models.build.teacher_arch`, classes, config, weights: randomly initialised - the
cost does not depend on them) is saved to the work folder; :func:`dlkdd.pipeline.cache_logits.precompute_logits`
then scores the first ``n_clips`` training clips (an ARID-format list written to the work folder)
into a fresh Zarr store per K. Reported per K: ``seconds`` (the whole call), ``scan_s`` (the
bad-clip scan that the call starts with, timed separately on the same clips), ``clips_per_s``
(net of the scan), ``views_per_s`` and the store's size on disk per clip.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["bench_precompute", "store_bytes"]


def store_bytes(path: Path) -> int:
    """Bytes on disk of a store (a Zarr directory or an HDF5 file)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _subset_list(cfg: Any, n_clips: int, out: Path) -> str:
    lines = [ln for ln in Path(cfg.data.train_list).read_text().splitlines() if ln.strip()]
    out.write_text("\n".join(lines[:n_clips]) + "\n")
    return str(out)


def bench_precompute(cfg: Any, classes: list[str], work_dir: Path, device: Any, n_clips: int,
                     views: Any, workers: int | None = None) -> dict[str, Any]:
    from dlkdd.bench.models import bench_teacher
    from dlkdd.pipeline.cache_logits import precompute_logits
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.models.build import teacher_arch
    from dlkdd.data.prepare import find_bad_clips
    from dlkdd.train.checkpoint import save_checkpoint

    work_dir = Path(work_dir)
    if cfg.data.format != "arid":
        raise ValueError("the precompute benchmark writes an ARID-format subset list; data.format must be arid")
    sub = cfg.replace(**{"data.train_list": _subset_list(cfg, n_clips, work_dir / "precompute-train.txt"),
                         "data.test_list": "", "cache.dir": str(work_dir / "cache")})
    n = len(classes)
    teacher, note = bench_teacher(sub, n)
    arch = teacher_arch(sub, n)
    ckpt = save_checkpoint(work_dir / "bench-teacher.pt", kind="teacher", arch=arch, classes=list(classes),
                           config=sub.to_dict(), model=teacher.state_dict(), epoch=0)
    manifest = manifest_from_config(sub.data, "train")
    t0 = time.perf_counter()
    find_bad_clips(manifest, progress=False)
    scan = time.perf_counter() - t0
    workers = int(sub.train.workers if workers is None else workers)
    rows = []
    for k in views:
        path = work_dir / f"precompute-k{k}.zarr"
        t0 = time.perf_counter()
        precompute_logits(sub.replace(**{"cache.views": int(k), "train.workers": workers}), ckpt, out=path,
                          fmt="zarr", device=str(device), progress=False)
        dt = time.perf_counter() - t0
        net = max(dt - scan, 1e-9)
        size = store_bytes(path)
        rows.append({"views": int(k), "clips": len(manifest), "seconds": dt, "scan_s": scan,
                     "clips_per_s": len(manifest) / net, "views_per_s": len(manifest) * int(k) / net,
                     "clips_per_s_total": len(manifest) / dt, "store_bytes": size,
                     "store_kb_per_clip": size / 1024.0 / len(manifest)})
        log.info("precompute K=%d: %.1f s for %d clips", k, dt, len(manifest))
    return {"teacher": f"{sub.model.backbone}+{sub.model.head}, {note}", "clip": list(
        (sub.clip.frames, sub.clip.size, sub.clip.size)), "workers": workers, "batch_size": sub.cache.batch_size,
        "dtype": sub.cache.dtype, "format": "zarr", "by_views": rows}
