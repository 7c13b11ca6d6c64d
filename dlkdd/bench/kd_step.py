"""Cached vs online distillation: one student training step, two ways, same batches.

Shapes: a batch is ``video`` (B,3,T,S,S) in [0,1], ``label`` (B,), teacher logits (B,C).

- **cached** (DL-KDD): the batch's soft targets are read from a real
  :class:`~dlkdd.cache.store.LogitStore` (one random stored view per clip, as
  :class:`~dlkdd.data.views.StoredView` does), then the student step:
  forward, ``build_objective(cfg.kd)`` (CE + alpha KL), backward, AdamW step.
- **online** (conventional KD): the teacher (frozen ZeroDCE + R(2+1)D-BERT) runs forward on the
  batch under ``no_grad``, then the same student step.
- **student**: the same step with the soft targets already in memory (no cache read) and
  **teacher_forward**: the teacher forward alone. Together they give the ideal speed-up of
  caching, ``(student + teacher_forward) / student``; ``efficiency = speedup / ideal_speedup``
  says how close the cached path comes (1.0: reading the cache costs nothing; target >= 0.9).

The four variants run round-robin on the same pre-decoded batches (warm-up first, order rotated
every round, median reported), so machine noise hits them alike and their ratios carry the
claim. The end-to-end variant adds the DataLoader: cached = ``ClipDataset`` + ``StoredView`` (decode +
store read per sample), online = ``ClipDataset`` + ``RandomView`` + teacher, ``train.workers`` workers.
Peak memory: :mod:`dlkdd.bench.memory` (fresh process per variant).
The stored logits are random normal values (the cost of reading them does not depend on them);
the stored views are the real K views ``dlkdd cache-logits`` would draw for each clip.
"""
from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["bench_kd_step", "make_bench_store", "StudentStep"]


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cycle_batches(loader: Any, it: Any) -> Any:
    """The batches of iterator ``it`` over ``loader``, then of fresh passes over ``loader``, without end
    (a timed loop asks for more batches than one pass holds)."""
    while True:
        yield from it
        it = iter(loader)


class StudentStep:
    """One optimiser step of the DL-KDD student on a batch holding ``teacher_logits``."""

    def __init__(self, cfg: Any, num_classes: int, device: torch.device):
        from dlkdd.models.build import build_student
        from dlkdd.train.engine import autocast_dtype, prepare_model
        from dlkdd.train.objectives import build_objective
        from dlkdd.train.optim import build_optimizer

        self.device = device
        self.model = prepare_model(build_student(cfg, num_classes), device).train()
        self.optimizer = build_optimizer(self.model, cfg.train)
        self.objective = build_objective(cfg.kd)
        self.dtype = autocast_dtype(cfg.train.amp, device)

    def autocast(self):
        import contextlib

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def __call__(self, batch: dict) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            terms, _ = self.objective(self.model, batch, 0)
        terms["loss"].backward()
        self.optimizer.step()
        return float(terms["loss"].detach())


def make_bench_store(path: Path, manifest: Any, clip_cfg: Any, views: int, num_classes: int, seed: int = 0) -> Path:
    """A complete Zarr LogitStore for ``manifest``: real views, random normal logits (see module doc)."""
    from dlkdd.data.views import clip_views
    from dlkdd.cache.store import LogitStore
    from dlkdd.data.video import probe

    rng = np.random.default_rng(seed)
    with LogitStore.create(path, manifest.keys(), views, num_classes, {"benchmark": True}, fmt="zarr") as s:
        vs = []
        for e in manifest.entries:
            info = probe(e.path)
            vs.append(np.stack([v.to_array() for v in clip_views(e.key, info.num_frames, info.height, info.width,
                                                                 clip_cfg, views, seed)]))
        logits = (3.0 * rng.standard_normal((len(manifest), views, num_classes))).astype(np.float32)
        s.write_many(np.arange(len(manifest)), logits, np.stack(vs))
        s.mark_complete()
    return path


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _preload_batches(manifest: Any, cfg: Any, n_batches: int, batch: int) -> list[dict]:
    from torch.utils.data import DataLoader

    from dlkdd.data.dataset import ClipDataset, collate
    from dlkdd.data.views import RandomView

    ds = ClipDataset(manifest, cfg.clip, RandomView(cfg.clip, seed=cfg.seed))
    idx = [i % len(ds) for i in range(n_batches * batch)]
    loader = DataLoader(torch.utils.data.Subset(ds, idx), batch_size=batch, shuffle=False, num_workers=0,
                        collate_fn=collate)
    return list(loader)


def _round_robin(variants: dict[str, Callable[[int], Any]], warmup: int, steps: int,
                 device: torch.device) -> dict[str, list[float]]:
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    from tqdm import tqdm

    for r in tqdm(range(warmup + steps), desc="kd step (round-robin)", unit="round", leave=False):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate: no variant always first
        for name in order:
            sync_device(device)
            t0 = time.perf_counter()
            variants[name](r)
            sync_device(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def _e2e(loader: Any, step: Callable[[dict], Any], steps: int, device: torch.device) -> list[float]:
    """Per-step wall time including the wait for the next batch (1 warm-up step excluded)."""
    times = []
    it = cycle_batches(loader, iter(loader))
    for i in range(steps + 1):
        sync_device(device)
        t0 = time.perf_counter()
        batch = next(it)
        step(batch)
        sync_device(device)
        if i >= 1:
            times.append(time.perf_counter() - t0)
    return times


def bench_kd_step(cfg: Any, manifest: Any, work_dir: Path, device: torch.device, warmup: int, steps: int,
                  e2e_steps: int, mem_steps: int, workers: int | None = None) -> dict[str, Any]:
    """Cached vs online KD step (in memory and end to end) and peak memory; see the module doc."""
    from torch.utils.data import DataLoader

    from dlkdd.bench.memory import run_probe
    from dlkdd.bench.models import bench_teacher
    from dlkdd.cache.reader import StoreRows
    from dlkdd.cache.store import LogitStore
    from dlkdd.data.dataset import ClipDataset, collate
    from dlkdd.data.views import RandomView, StoredView
    from dlkdd.train.engine import prepare_model, to_device

    B = int(cfg.train.batch_size)
    n = len(manifest.classes)
    workers = int(cfg.train.workers if workers is None else workers)
    store_path = make_bench_store(Path(work_dir) / "kd-bench.zarr", manifest, cfg.clip, cfg.cache.views, n, cfg.seed)
    store = LogitStore.open(store_path)
    rows_of = {k: store.index_of(k) for k in manifest.keys()}

    n_pre = min(3, max(1, len(manifest) // B))
    batches = [to_device(b, device) for b in _preload_batches(manifest, cfg, n_pre, B)]
    rng = np.random.default_rng(cfg.seed)
    in_memory = []  # the same soft targets, read once up front, for the "student" variant
    for b in batches:
        lg, _ = store.read_many([rows_of[k] for k in b["key"]])
        in_memory.append(torch.from_numpy(lg[np.arange(lg.shape[0]), rng.integers(lg.shape[1], size=lg.shape[0])])
                         .to(device))

    step = StudentStep(cfg, n, device)
    teacher, enh_note = bench_teacher(cfg, n)
    teacher = prepare_model(teacher, device).eval()

    def teacher_logits(video: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), step.autocast():
            return teacher(video).float()

    def v_student(r: int) -> None:
        b = batches[r % n_pre]
        step({**b, "teacher_logits": in_memory[r % n_pre]})

    def v_cached(r: int) -> None:
        b = batches[r % n_pre]
        lg, _ = store.read_many([rows_of[k] for k in b["key"]])
        pick = rng.integers(lg.shape[1], size=lg.shape[0])
        tl = torch.from_numpy(np.ascontiguousarray(lg[np.arange(lg.shape[0]), pick])).to(device)
        step({**b, "teacher_logits": tl})

    def v_online(r: int) -> None:
        b = batches[r % n_pre]
        step({**b, "teacher_logits": teacher_logits(b["video"])})

    def v_teacher(r: int) -> None:
        teacher_logits(batches[r % n_pre]["video"])

    log.info("kd step: batch %d, %s, %d warm-up + %d timed rounds", B, tuple(batches[0]["video"].shape), warmup, steps)
    times = _round_robin({"student": v_student, "cached": v_cached, "online": v_online, "teacher_forward": v_teacher},
                         warmup, steps, device)
    med = {k: _median(v) for k, v in times.items()}
    ideal = (med["student"] + med["teacher_forward"]) / med["student"]
    speedup = med["online"] / med["cached"]
    out: dict[str, Any] = {
        "batch": B, "input_shape": list(batches[0]["video"].shape), "warmup": warmup, "steps": steps,
        "teacher_enhancer": enh_note,
        "cached_s_per_step": med["cached"], "online_s_per_step": med["online"],
        "student_s_per_step": med["student"], "teacher_forward_s": med["teacher_forward"],
        "cached_clips_per_s": B / med["cached"], "online_clips_per_s": B / med["online"],
        "speedup": speedup, "ideal_speedup": ideal, "efficiency": speedup / ideal,
        "cache_read_overhead": med["cached"] / med["student"] - 1.0,
        "within_10pct_of_ideal": bool(speedup >= 0.9 * ideal),
        "times_s": times,
    }

    # ---- end to end: the DataLoader included
    cached_ds = ClipDataset(manifest, cfg.clip, StoredView(StoreRows(manifest, store_path), seed=cfg.seed))
    online_ds = ClipDataset(manifest, cfg.clip, RandomView(cfg.clip, seed=cfg.seed))
    kw = dict(batch_size=B, shuffle=True, num_workers=workers, collate_fn=collate, drop_last=len(manifest) >= B,
              persistent_workers=workers > 0)

    def e2e_cached(b: dict) -> None:
        step(to_device(b, device))

    def e2e_online(b: dict) -> None:
        b = to_device(b, device)
        step({**b, "teacher_logits": teacher_logits(b["video"])})

    log.info("kd step end to end (%d loader workers), %d steps each", workers, e2e_steps)
    t_c = _e2e(DataLoader(cached_ds, generator=torch.Generator().manual_seed(cfg.seed), **kw), e2e_cached,
               e2e_steps, device)
    t_o = _e2e(DataLoader(online_ds, generator=torch.Generator().manual_seed(cfg.seed), **kw), e2e_online,
               e2e_steps, device)
    mc, mo = _median(t_c), _median(t_o)
    out["e2e"] = {"workers": workers, "steps": e2e_steps, "cached_s_per_step": mc, "online_s_per_step": mo,
                  "cached_clips_per_s": B / mc, "online_clips_per_s": B / mo, "speedup": mo / mc,
                  "data_wait_fraction": max(0.0, 1.0 - med["cached"] / mc), "times_s": {"cached": t_c, "online": t_o}}
    store.close()
    del teacher, step, batches

    # ---- peak memory: a fresh process per variant
    spec = {"config": cfg.to_dict(), "num_classes": n, "batch": B, "steps": mem_steps, "store": str(store_path),
            "device": str(device), "threads": torch.get_num_threads()}
    mem = {v: run_probe(dict(spec, variant=v)) for v in ("cached", "online")}
    key = "gpu_peak_mb" if device.type == "cuda" else "peak_rss_mb"
    out.update({
        "cached_peak_mem_mb": mem["cached"][key], "online_peak_mem_mb": mem["online"][key],
        "mem_ratio": mem["online"][key] / mem["cached"][key],
        "mem_method": ("torch.cuda.max_memory_allocated in a fresh process per variant" if device.type == "cuda" else
                       "peak RSS (VmHWM) of a fresh process per variant: imports + models + "
                       f"{mem_steps} step(s); includes python+torch ({mem['cached']['base_rss_mb']:.0f} MB)"),
        "mem_probes": mem,
    })
    return out
