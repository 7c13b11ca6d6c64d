"""``dlkdd cache bench``: the logit store's write and read speed at a given size, through
:class:`dlkdd.cache.store.LogitStore` as precompute uses it (``create``, ``write_many`` of rank-owned
row ranges, ``mark_complete``), on synthetic data.

Writes N clips x V views x C classes of standard-normal float16 logits (and float64 view
parameters) to a new store, closes it, reopens it read-only and reads it back:

- ``write_clips_per_s``: N / the seconds spent in ``write_many`` + ``mark_complete`` (the random data
  is drawn outside the timer), in blocks of one storage unit (Zarr: a shard, ``rows_per_chunk``
  rows; HDF5: 512 rows), as one rank of a sharded precompute writes its share;
- ``read_clips_per_s``: random single clips, ``LogitStore.read(i)`` (logits (V,C) and views (V,P));
- ``read_batch_clips_per_s``: random batches of 64 clips, ``read_many``.

With ``loader``, also the student's read path: a DataLoader (batches of 64, 0 and 2 workers) over
:class:`dlkdd.data.views.StoredView` + :class:`dlkdd.cache.reader.StoreRows` of 2048 random clips,
returning only the stored fields of the chosen view (no video): ``loader_clips_per_s_w0`` /
``_w2`` and ``loader_wait_ms_per_batch_w0`` / ``_w2`` (the time the training loop would wait per
batch for the store alone, excluding the workers' start).

With ``ranks > 1`` the rows are written by that many processes at once, each its
:func:`dlkdd.cache.parts.shard_rows` share of whole shards (as the ranks of a ``torchrun`` precompute
do), into the one store; ``write_clips_per_s`` is then N / the slowest rank's seconds in ``write_many``.

Reads come from the page cache when the store fits in memory (it was just written); the result also
holds ``files`` and ``bytes`` on disk and ``logical_bytes`` (N x V x (C x 2 + P x 8)).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["bench_store", "disk_usage"]

_BATCH = 64


def disk_usage(path: str | os.PathLike) -> tuple[int, int]:
    """``(files, bytes allocated on disk)`` of a store directory or file (``du``-like: st_blocks)."""
    p = Path(path)
    items = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    return len(items), sum(f.stat().st_blocks * 512 for f in items)


def _write_rows(path: Path, rows: np.ndarray, seed: int, progress: bool) -> float:
    """Write ``rows`` of the store at ``path`` (open ``r+``) in blocks of one storage unit; the seconds
    spent in ``write_many``."""
    from tqdm import tqdm

    from dlkdd.cache.store import VIEW_PARAMS, LogitStore

    rng = np.random.default_rng(seed)
    spent = 0.0
    with LogitStore.open(path, mode="r+") as s:
        block = s.rows_per_chunk if s.rows_per_chunk > 1 else 512
        views, classes = s.views_per_clip, s.num_classes
        with tqdm(total=rows.size, desc=f"writing {path.name}", unit="clip", disable=not progress) as bar:
            for lo in range(0, rows.size, block):
                r = rows[lo:lo + block]
                logits = rng.standard_normal((r.size, views, classes), dtype=np.float32).astype(np.float16)
                vw = rng.random((r.size, views, VIEW_PARAMS))
                t = time.perf_counter()
                s.write_many(r, logits, vw)
                spent += time.perf_counter() - t
                bar.update(r.size)
    return spent


def _rank_main(path: str, rank: int, ranks: int, seed: int, out: Any) -> None:
    from dlkdd.cache.parts import shard_rows
    from dlkdd.cache.store import LogitStore

    with LogitStore.open(path) as s:
        n, rpc = s.num_clips, s.rows_per_chunk
    mine = np.asarray(shard_rows(range(n), rank, ranks, rpc), dtype=np.int64)
    out.put((rank, _write_rows(Path(path), mine, seed + rank, False)))


def _write(path: Path, n: int, views: int, classes: int, fmt: str, seed: int, progress: bool, ranks: int = 1) -> float:
    import multiprocessing as mp

    from dlkdd.cache.store import LogitStore, StoreLayout

    keys = [f"bench/clip_{i:08d}" for i in range(n)]
    meta = {"benchmark": True, "classes": [f"c{j}" for j in range(classes)]}
    with LogitStore.create(path, keys, views, classes, meta, layout=StoreLayout(dtype="float16"), fmt=fmt) as s:
        if ranks > 1 and not s.parallel_writers:
            raise ValueError(f"{fmt} stores have one writer; --ranks needs --format zarr")
    if ranks <= 1:
        spent = _write_rows(path, np.arange(n), seed, progress)
    else:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        procs = [ctx.Process(target=_rank_main, args=(str(path), r, ranks, seed, q)) for r in range(ranks)]
        for p in procs:
            p.start()
        times = dict(q.get() for _ in procs)
        for p in procs:
            p.join()
        spent = max(times.values())
    with LogitStore.open(path, mode="r+") as s:
        t = time.perf_counter()
        s.mark_complete()
        spent += time.perf_counter() - t
    return spent


def _read(path: Path, n: int, seed: int, singles: int, batches: int) -> tuple[float, float]:
    from dlkdd.cache.store import LogitStore

    rng = np.random.default_rng(seed + 1)
    with LogitStore.open(path) as s:
        s.read(0)  # open the handles outside the timer
        idx = rng.integers(0, n, size=min(singles, max(n, 1)))
        t = time.perf_counter()
        for i in idx:
            s.read(int(i))
        single = idx.size / max(time.perf_counter() - t, 1e-9)
        t = time.perf_counter()
        for _ in range(batches):
            s.read_many(rng.choice(n, size=min(_BATCH, n), replace=False))
        batch = batches * min(_BATCH, n) / max(time.perf_counter() - t, 1e-9)
    return single, batch


class _Keys:
    def __init__(self, keys: list[str]):
        self._keys = keys

    def keys(self) -> list[str]:
        return list(self._keys)


class _StoredFields:
    """A dataset of the stored fields only (no video): what the student's loader reads from the store."""

    def __init__(self, policy: Any, n: int):
        self.policy, self.n = policy, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.policy._stored(int(i), 0)[2]


def _loader(path: Path, n: int, workers: int, seed: int, samples: int = 2048) -> tuple[float, float]:
    """``(clips/s, ms waited per batch of 64)`` of a DataLoader over the stored fields of random clips."""
    from torch.utils.data import DataLoader, SubsetRandomSampler

    from dlkdd.cache.reader import StoreRows
    from dlkdd.cache.store import LogitStore
    from dlkdd.data.views import StoredView

    with LogitStore.open(path) as s:
        keys = s.keys
    rng = np.random.default_rng(seed + 2)
    pick = rng.choice(n, size=min(samples, n), replace=False).tolist()
    ds = _StoredFields(StoredView(StoreRows(_Keys(keys), path), seed=seed), n)
    loader = DataLoader(ds, batch_size=_BATCH, sampler=SubsetRandomSampler(pick), num_workers=workers)
    it = iter(loader)
    next(it)  # the workers' start is not the store's cost
    t, batches = time.perf_counter(), 0
    for _ in it:
        batches += 1
    dt = max(time.perf_counter() - t, 1e-9)
    return batches * _BATCH / dt, 1000 * dt / max(batches, 1)


def bench_store(path: str | os.PathLike, clips: int, views: int, classes: int, fmt: str, seed: int = 0,
                progress: bool = False, ranks: int = 1, singles: int = 2000, batches: int = 50,
                loader: bool = False) -> dict[str, Any]:
    """Write then read a synthetic store at ``path`` (kept); the numbers described in the module docstring."""
    path = Path(path)
    write_s = _write(path, clips, views, classes, fmt, seed, progress, ranks)
    single, batch = _read(path, clips, seed, singles, batches)
    extra = {}
    for w in (0, 2) if loader else ():
        extra[f"loader_clips_per_s_w{w}"], extra[f"loader_wait_ms_per_batch_w{w}"] = _loader(path, clips, w, seed)
    files, size = disk_usage(path)
    logical = clips * views * (classes * 2 + 8 * 8)
    return {"format": fmt, "ranks": ranks, "clips": clips, "views": views, "classes": classes, "dtype": "float16",
            "write_clips_per_s": clips / max(write_s, 1e-9), "read_clips_per_s": single,
            "read_batch_clips_per_s": batch, "files": files, "bytes": size, "logical_bytes": logical,
            "bytes_per_clip": size / max(clips, 1), "disk_over_logical": size / max(logical, 1), "path": str(path), **extra}
