"""A student epoch end to end: how much of its wall time is data wait and decode, and its rate
against the same steps on batches already in memory.

Shapes: batches ``video`` (B,3,T,S,S) float32 in [0,1], ``label`` (B,), ``teacher_logits`` (B,C).
The student step is :class:`~dlkdd.bench.kd_step.StudentStep` (forward, CE + alpha KL, backward,
AdamW) under ``train.amp`` (and, for the fp32/bf16 ratio, under both).

Variants, each an "epoch" of ``steps`` batches of :class:`~dlkdd.data.dataset.ClipDataset` (``StoredView``)
through a DataLoader with ``w`` workers (a fresh iterator: worker start-up counts, as in
training), round-robin over ``rounds`` so machine noise hits them alike:

- ``memory``: the same steps on batches collated beforehand (the rate to reach);
- ``decode/w``: the student decodes its view of each clip from the video (PyAV) - today's path;
- ``stored/w``: the view is read as uint8 from the clips stored beside the logits
  (``cache.clips``, :mod:`dlkdd.cache.clips`) - no decoding.

Per variant: ``s_per_step`` (median over rounds of the epoch mean), ``clips_per_s``,
``rate_vs_memory`` = clips/s over the memory variant's (target >= 0.90; ``rate_vs_memory_best``:
the same from each variant's fastest round - on a CPU shared with other jobs the least disturbed
estimate, as other jobs only ever slow a round down), ``data_wait_share`` =
time blocked in ``next(loader)`` / epoch wall time, and ``load_cpu_share`` = the CPU time that
producing the epoch's clips costs (``load_ms_per_clip`` measured in this process x clips) / epoch
wall time: the share of one core the loader takes from the step, even when its wait is hidden.
The store's logits are random (their values cost nothing); its views and clips are the real
ones ``dlkdd cache-logits`` would store.
"""
from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlkdd.bench.kd_step import StudentStep, cycle_batches, sync_device

log = logging.getLogger(__name__)

__all__ = ["bench_student_epoch", "make_epoch_stores"]


def make_epoch_stores(work: Path, manifest: Any, clip_cfg: Any, views: int, num_classes: int,
                      seed: int = 0) -> tuple[Path, Path]:
    """Two complete Zarr logit stores of ``manifest`` with the same real views and random logits:
    ``decode.zarr`` (the student decodes) and ``stored.zarr`` (+ its uint8 clips)."""
    from dlkdd.cache.clips import ClipStore, clip_store_path, quantize
    from dlkdd.cache.store import LogitStore
    from dlkdd.data.dataset import ClipDataset
    from dlkdd.data.views import CacheViews

    rng = np.random.default_rng(seed)
    paths = (Path(work) / "epoch-decode.zarr", Path(work) / "epoch-stored.zarr")
    cs = ClipStore.create(clip_store_path(paths[1]), len(manifest), views, clip_cfg.frames, clip_cfg.size)
    vs = []
    ds = ClipDataset(manifest, clip_cfg, CacheViews(clip_cfg, views, seed))  # what cache-logits stores
    for i in range(len(manifest)):
        sample = ds[i]
        cs.write_many([i], quantize(sample["video"])[None])
        vs.append(sample["view"].numpy())
    logits = (3.0 * rng.standard_normal((len(manifest), views, num_classes))).astype(np.float32)
    for p, meta in zip(paths, ({"benchmark": True}, {"benchmark": True, "clips": "uint8"})):
        with LogitStore.create(p, manifest.keys(), views, num_classes, meta, fmt="zarr") as s:
            s.write_many(np.arange(len(manifest)), logits, np.stack(vs))
            s.mark_complete()
    return paths


def _load_ms(ds: Any, n: int) -> float:
    """ms of CPU to produce one sample of ``ds`` in this process: median of the first ``n``. Process CPU
    time (all its threads, e.g. Zarr's I/O thread), not wall time: other jobs on the machine do not
    inflate it, and it is what ``load_cpu_share`` is defined on."""
    ts = []
    for i in range(min(n, len(ds))):
        t0 = time.process_time()
        ds[i]
        ts.append(time.process_time() - t0)
    return 1000.0 * statistics.median(ts)


def _loader_epoch(loader: Any, step: Any, steps: int, device: torch.device) -> dict[str, float]:
    from dlkdd.train.engine import to_device

    t0 = time.perf_counter()
    wait = 0.0
    it = cycle_batches(loader, iter(loader))  # the first iterator's start-up in the wall time, not the wait
    for _ in range(steps):
        ta = time.perf_counter()
        b = next(it)
        wait += time.perf_counter() - ta
        step(to_device(b, device))
        sync_device(device)
    wall = time.perf_counter() - t0
    del it
    return {"wall_s": wall, "wait_s": wait}


def _memory_epoch(batches: list[dict], step: Any, steps: int, device: torch.device) -> dict[str, float]:
    t0 = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
        sync_device(device)
    return {"wall_s": time.perf_counter() - t0, "wait_s": 0.0}


def bench_student_epoch(cfg: Any, manifest: Any, work: Path, device: torch.device, steps: int,
                        workers: tuple[int, ...] = (0, 1, 2), rounds: int = 2,
                        amps: tuple[str, ...] = ("fp32", "bf16")) -> dict[str, Any]:
    """See the module doc. ``steps``: batches per epoch variant (capped at the epoch's batches);
    ``amps``: the precisions the memory variant is also timed in (their ratio is the fp32/bf16 one)."""
    from torch.utils.data import DataLoader

    from dlkdd.cache.reader import StoreRows
    from dlkdd.data.dataset import ClipDataset, collate
    from dlkdd.data.views import StoredView
    from dlkdd.train.amp import amp_name, autocast_dtype
    from dlkdd.train.engine import to_device

    B = int(cfg.train.batch_size)
    n = len(manifest.classes)
    steps = max(1, min(int(steps), len(manifest) // B or 1))
    t_store = time.perf_counter()
    dec_path, sto_path = make_epoch_stores(Path(work), manifest, cfg.clip, cfg.cache.views, n, cfg.seed)
    t_store = time.perf_counter() - t_store
    datasets = {name: ClipDataset(manifest, cfg.clip, StoredView(StoreRows(manifest, p), seed=cfg.seed))
                for name, p in (("decode", dec_path), ("stored", sto_path))}
    load_ms = {k: _load_ms(ds, 2 * B) for k, ds in datasets.items()}

    # the memory variant's batches: this epoch's first batches, collated once
    order = torch.randperm(len(manifest), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    mem_batches = [to_device(collate([datasets["stored"][j] for j in order[i * B:(i + 1) * B]]), device)
                   for i in range(min(steps, 3))]
    train_amp = amp_name(autocast_dtype(cfg.train.amp, device))
    amps = tuple(dict.fromkeys([*amps, train_amp]))
    step_of = {}
    for a in amps:
        torch.manual_seed(cfg.seed)
        step_of[a] = StudentStep(cfg.replace(**{"train.amp": a}), n, device)
        step_of[a](mem_batches[0])  # warm-up: allocator, oneDNN primitives
    step = step_of[train_amp]

    def loader(kind: str, w: int) -> DataLoader:
        return DataLoader(datasets[kind], batch_size=B, shuffle=True, num_workers=w, collate_fn=collate,
                          drop_last=True, generator=torch.Generator().manual_seed(cfg.seed),
                          prefetch_factor=2 if w else None)

    variants: dict[str, Any] = {f"memory/{a}": (lambda a=a: _memory_epoch(mem_batches, step_of[a], steps, device))
                                for a in amps}
    for kind in ("decode", "stored"):
        for w in workers:
            variants[f"{kind}/{w}"] = (lambda kind=kind, w=w: _loader_epoch(loader(kind, w), step, steps, device))
    names = list(variants)
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    from tqdm import tqdm

    for r in tqdm(range(rounds), desc="student epoch (round-robin)", unit="round", leave=False):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(variants[name]())
            log.info("epoch variant %s: %.2f s/step", name, runs[name][-1]["wall_s"] / steps)

    mem_wall = statistics.median(x["wall_s"] for x in runs[f"memory/{train_amp}"])
    mem_best = min(x["wall_s"] for x in runs[f"memory/{train_amp}"])
    rows = []
    for name in names:
        kind, arg = name.split("/")
        wall = statistics.median(x["wall_s"] for x in runs[name])
        best = min(x["wall_s"] for x in runs[name])
        wait = statistics.median(x["wait_s"] for x in runs[name])
        own = kind != "memory" or arg == train_amp
        row = {"variant": name, "kind": kind, "amp": arg if kind == "memory" else train_amp,
               "workers": None if kind == "memory" else int(arg), "s_per_step": wall / steps,
               "clips_per_s": steps * B / wall, "data_wait_share": wait / wall,
               "rate_vs_memory": mem_wall / wall if own else None,
               "rate_vs_memory_best": mem_best / best if own else None, "s_per_step_best": best / steps,
               "load_ms_per_clip": load_ms.get(kind), "walls_s": [x["wall_s"] for x in runs[name]]}
        row["load_cpu_share"] = (load_ms[kind] * steps * B / 1000.0 / wall) if kind in load_ms else 0.0
        rows.append(row)
    by = {r["variant"]: r for r in rows}
    out: dict[str, Any] = {
        "batch": B, "steps": steps, "rounds": rounds, "amp": train_amp, "workers": list(workers),
        "input_shape": list(mem_batches[0]["video"].shape), "threads": torch.get_num_threads(),
        "store_build_s": t_store, "variants": rows, "load_ms_per_clip": load_ms,
    }
    if "memory/fp32" in by and "memory/bf16" in by:
        out["fp32_over_bf16_step"] = by["memory/fp32"]["s_per_step"] / by["memory/bf16"]["s_per_step"]
    tw = int(cfg.train.workers)
    for kind in ("decode", "stored"):
        cand = [r for r in rows if r["kind"] == kind]
        at = by.get(f"{kind}/{tw}") or max(cand, key=lambda r: r["clips_per_s"])
        out[kind] = {"workers": at["workers"], "rate_vs_memory": at["rate_vs_memory"],
                     "rate_vs_memory_best": at["rate_vs_memory_best"],
                     "data_wait_share": at["data_wait_share"], "load_cpu_share": at["load_cpu_share"],
                     "best_workers": max(cand, key=lambda r: r["clips_per_s"])["workers"]}
    out["meets_90pct"] = bool(out["stored"]["rate_vs_memory"] >= 0.9)
    for ds in datasets.values():
        ds.policy.rows.store.close()
    return out
