"""Decode throughput of the training input pipeline (decode + view + resize), for ``dlkdd bench``.

:func:`decode_throughput` loads ``n_clips`` training clips of ``frames`` frames through a
:class:`~dlkdd.data.dataset.ClipDataset` (random training views) in a DataLoader with ``workers`` worker processes
(batch size 1) and reports the wall time, worker start-up included.
"""
from __future__ import annotations

import dataclasses
import time

from dlkdd.data.dataset import ClipDataset, collate
from dlkdd.data.manifest import Manifest
from dlkdd.data.views import RandomView

__all__ = ["decode_throughput"]


def decode_throughput(manifest: Manifest, clip_cfg, frames: int, workers: int, n_clips: int,
                      stride: int | None = None, seed: int = 0) -> dict:
    """Time loading ``n_clips`` random training clips of ``frames`` frames with ``workers`` workers.

    Returns ``{frames, stride, size, workers, n_clips, seconds, ms_per_clip, clips_per_s}``.
    Clips cycle through the manifest when ``n_clips > len(manifest)``.
    """
    from torch.utils.data import DataLoader

    cfg = dataclasses.replace(clip_cfg, frames=int(frames), stride=int(stride or clip_cfg.stride))
    m = manifest.subset([i % len(manifest) for i in range(n_clips)]) if n_clips <= len(manifest) else None
    if m is None:  # repeated keys are not allowed in a Manifest: wrap the dataset instead
        base = ClipDataset(manifest, cfg, RandomView(cfg, seed=seed))

        class _Cycle:
            def __len__(self):
                return n_clips

            def __getitem__(self, i):
                return base[i % len(base)]

        ds = _Cycle()
    else:
        ds = ClipDataset(m, cfg, RandomView(cfg, seed=seed))
    loader = DataLoader(ds, batch_size=1, num_workers=workers, collate_fn=collate)
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch["video"].shape[0]
    dt = time.perf_counter() - t0
    return {"frames": cfg.frames, "stride": cfg.stride, "size": cfg.size, "workers": workers, "n_clips": n,
            "seconds": dt, "ms_per_clip": 1000.0 * dt / max(n, 1), "clips_per_s": n / dt if dt > 0 else float("inf")}
