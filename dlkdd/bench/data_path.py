"""Does training wait for data? Decode cost, loader throughput, training-step throughput.

- ``decode``: ms per clip of the input pipeline in the main process (decode the needed frames,
  crop, resize: :func:`dlkdd.data.throughput.decode_throughput` with 0 workers) for each frame
  count (64 frames at stride 1, as the paper's clips; shorter ones at the preset's stride).
- ``loader``: clips/s of a DataLoader over :class:`~dlkdd.data.dataset.ClipDataset` with 0, 1
  and 2 workers (worker start-up included) at the preset's clip shape.
- ``train_step_clips_per_s``: clips/s of the student step alone (no data loading), from the KD
  benchmark when it ran; else estimated from the inference profile at the same shape (a training
  step costs about 3 forwards: forward + backward ~ 2 forwards, Kaplan et al. 2020), or measured
  here on random clips. ``train_step_source`` says which.
- ``waits_for_data``: the loader with ``train.workers`` workers delivers fewer clips/s than the
  step consumes. On a machine where loader workers share the cores with the training step, the
  end-to-end measurement of the KD benchmark (``kd_step.e2e.data_wait_fraction``) is the
  direct answer; both are reported.
"""
from __future__ import annotations

import logging
import statistics
import time
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["bench_data", "student_step_clips_per_s"]


def student_step_clips_per_s(cfg: Any, num_classes: int, device: Any, steps: int = 3) -> float:
    """Clips/s of the student step on random clips of ``cfg``'s shape (1 warm-up step)."""
    import torch

    from dlkdd.bench.kd_step import StudentStep

    step = StudentStep(cfg, num_classes, torch.device(device))
    B = cfg.train.batch_size
    batch = {"video": torch.rand(B, 3, cfg.clip.frames, cfg.clip.size, cfg.clip.size, device=device),
             "label": torch.randint(0, num_classes, (B,), device=device),
             "teacher_logits": torch.randn(B, num_classes, device=device)}
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - t0)
    return B / statistics.median(times)


def bench_data(cfg: Any, manifest: Any, device: Any, decode_frames: Any, decode_clips: int, loader_workers: Any,
               loader_clips: int, step_clips_per_s: float | None = None, e2e: dict | None = None,
               step_source: str = "kd_step (student step, soft targets in memory)",
               inference: dict | None = None) -> dict[str, Any]:
    from dlkdd.data.throughput import decode_throughput

    decode = []
    for f in decode_frames:
        stride = 1 if f >= 64 else cfg.clip.stride
        log.info("decode throughput: %d frames (stride %d), %d clips", f, stride, decode_clips)
        decode.append(decode_throughput(manifest, cfg.clip, frames=f, workers=0, n_clips=decode_clips, stride=stride))
    loader = []
    for w in loader_workers:
        log.info("loader throughput: %d workers, %d clips", w, loader_clips)
        loader.append(decode_throughput(manifest, cfg.clip, frames=cfg.clip.frames, workers=w, n_clips=loader_clips))
    if step_clips_per_s is None:
        same = [r for r in (inference or {}).get("by_shape", [])
                if r["input_shape"][2:] == [cfg.clip.frames, cfg.clip.size, cfg.clip.size]
                and r["backbone"] == cfg.model.backbone]
        if same:
            step_clips_per_s = 1000.0 / (3.0 * same[0]["student"]["latency_ms"])
            step_source = "estimated: 3 x the student's batch-1 inference latency"
        else:
            step_clips_per_s = student_step_clips_per_s(cfg, len(manifest.classes), device)
            step_source = "measured here (student step on random clips)"
    tw = int(cfg.train.workers)
    usable = [r for r in loader if r["workers"] <= tw] or loader
    at_tw = max(usable, key=lambda r: r["workers"])
    out = {
        "decode": decode, "loader": loader, "train_workers": tw,
        "train_step_clips_per_s": step_clips_per_s, "train_step_source": step_source,
        "loader_clips_per_s_at_train_workers": at_tw["clips_per_s"],
        "loader_over_step": at_tw["clips_per_s"] / step_clips_per_s,
        "waits_for_data": bool(at_tw["clips_per_s"] < step_clips_per_s),
    }
    if e2e is not None:
        out["e2e_data_wait_fraction"] = e2e.get("data_wait_fraction")
    return out
