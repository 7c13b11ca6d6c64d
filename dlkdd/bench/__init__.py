"""``dlkdd bench``: speed and cost of DL-KDD, side by side, in one command.

:func:`run_bench` runs the parts of a preset (:mod:`dlkdd.bench.presets`) and returns one dict
(written as JSON by the command, with a Markdown report from :mod:`dlkdd.bench.report`):

- ``kd_step`` (:mod:`dlkdd.bench.kd_step`): cached vs online distillation step, ideal speed-up,
  peak memory, end-to-end variant with the DataLoader;
- ``inference`` (:mod:`dlkdd.bench.inference`): params, GFLOPs, GMACs, memory, latency of the
  student, enhancement-based and two-stream inference (the paper's Table 5); under ``deploy``
  (:mod:`dlkdd.bench.deploy`) the student's CPU latency and file size as torch eager,
  TorchScript, ONNX Runtime fp32 and int8; under ``backbones`` several students side by side (the ``light``
  preset: EfficientNet-Lite0 and MobileNetV2 beside R(2+1)D-18/34), GMACs, eager and ONNX Runtime latency;
- ``data`` (:mod:`dlkdd.bench.data_path`): decode ms per clip, loader clips/s with 0/1/2 workers
  against the training step's clips/s;
- ``precompute`` (:mod:`dlkdd.bench.precompute`): teacher precompute clips/s for K views and
  the store's size per clip;
- ``epoch`` (:mod:`dlkdd.bench.epoch`): a student epoch through the DataLoader, decoding vs stored
  clips, against the same steps in memory: data-wait and decode shares, fp32 / bf16 step ratio;
- ``dlkdd cache bench`` (:mod:`dlkdd.bench.store`, not a part of this command): a logit store's write / read
  speed, files and bytes at N clips, through the code precompute and the student's loader use;
- ``pose`` (:mod:`dlkdd.bench.pose`; not in the default parts but the ``pose`` preset's): what posing costs
  when a pose checkpoint predicts a new video - decode, enhancer, BlazePose (frames/s), the skeleton network,
  total per clip and window - beside the R(2+1)D student's per-clip latency (needs the pose environment);
- ``machine`` (:mod:`dlkdd.bench.machine`), ``preset``, ``parts``, ``settings``, ``dataset`` (which data), ``seconds``.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

__all__ = ["run_bench", "resolve_parts"]


def resolve_parts(parts: str | Sequence[str] | None, preset: Any, cuda: bool) -> list[str]:
    """The parts to run: ``parts`` as given (comma list), else the preset's default for the device."""
    from dlkdd.bench.presets import ALL_PARTS, PARTS

    if parts in (None, "", ()):
        return list(preset.only_parts or (ALL_PARTS if cuda else preset.cpu_parts))
    names = [p.strip() for p in (parts.split(",") if isinstance(parts, str) else parts) if p.strip()]
    bad = [p for p in names if p not in PARTS]
    if bad:
        raise ValueError(f"unknown benchmark part(s) {bad}; choose from {', '.join(PARTS)}")
    return [p for p in PARTS if p in names]


def check_pose_env(todo: Sequence[str], estimator: Any = None) -> None:
    """The ``pose`` part runs BlazePose: refuse in one line, before any work, where mediapipe is missing."""
    from dlkdd.pose.infer import has_mediapipe

    if "pose" in todo and estimator is None and not has_mediapipe():
        raise ValueError("the pose part runs BlazePose (mediapipe), which this environment lacks: run it in the "
                         "pose environment, `.venv-pose/bin/dlkdd bench --preset pose` (create it with `make pose-env`)")


def run_bench(preset: str = "mini", parts: str | Sequence[str] | None = None, device: str = "auto",
              steps: int | None = None, overrides: Sequence[str] = (), work_dir: str | Path | None = None,
              seed: int | None = None, threads: int | None = None, pose_estimator: Any = None) -> dict[str, Any]:
    """Run the benchmark; see the module doc. ``steps`` overrides the preset's timed KD steps;
    ``threads``: torch intra-op threads (default: torch's; on a CPU shared with other jobs, 1 is
    faster and steadier than oversubscribed OpenMP threads). ``pose_estimator``: a stand-in for BlazePose in
    the ``pose`` part (tests; :func:`dlkdd.bench.pose.bench_pose`)."""
    import torch

    from dlkdd.bench.machine import machine_info
    from dlkdd.bench.presets import PRESETS, bench_config
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.utils import resolve_device, seed_everything

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    p = PRESETS[preset]
    dev = resolve_device(device)
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    todo = resolve_parts(parts, p, dev.type == "cuda")
    check_pose_env(todo, pose_estimator)
    t_start = time.perf_counter()
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dlkdd-bench-")
        work_dir = tmp.name
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        cfg, data_desc = bench_config(p, work, list(overrides) + ([f"seed={seed}"] if seed is not None else []))
        seed_everything(cfg.seed)
        manifest = manifest_from_config(cfg.data, "train")
        n = len(manifest.classes)
        kd_steps = int(steps) if steps else p.kd_steps
        result: dict[str, Any] = {
            "preset": preset, "parts": todo, "machine": machine_info(dev), "dataset": data_desc,
            "settings": {"backbone": cfg.model.backbone, "head": cfg.model.head, "clip": cfg.clip.__dict__,
                         "batch": cfg.train.batch_size, "workers": cfg.train.workers, "cache_views": cfg.cache.views,
                         "kd_steps": kd_steps, "kd_warmup": p.kd_warmup, "classes": n, "train_clips": len(manifest)},
        }
        log.info("dlkdd bench --preset %s on %s: %s", preset, dev, ", ".join(todo))
        part_s: dict[str, float] = {}
        result["part_seconds"] = part_s
        t_part = time.perf_counter()

        def done(part: str) -> None:
            nonlocal t_part
            part_s[part] = time.perf_counter() - t_part
            t_part = time.perf_counter()
            log.info("bench part %s: %.1f s", part, part_s[part])

        if "kd" in todo:
            from dlkdd.bench.kd_step import bench_kd_step

            result["kd_step"] = bench_kd_step(cfg, manifest, work, dev, p.kd_warmup, kd_steps, p.e2e_steps,
                                              p.mem_steps)
            done("kd")
        if "inference" in todo:
            from dlkdd.bench.inference import bench_inference

            result["inference"] = bench_inference(cfg, n, p.inference, dev, p.inference_repeats, p.inference_variants)
            result["inference"]["device"] = str(dev)
            if p.backbones:  # the preset's students side by side, eager and ONNX Runtime (dlkdd/bench/deploy.py)
                from dlkdd.bench.deploy import bench_backbones

                result["inference"]["backbones"] = bench_backbones(cfg, list(manifest.classes), work, p.backbones,
                                                                   max(p.deploy_repeats, 5))
            if p.deploy_repeats:  # the exported formats, CPU batch 1 (dlkdd/bench/deploy.py)
                from dlkdd.bench.deploy import bench_deploy

                result["inference"]["deploy"] = bench_deploy(cfg, list(manifest.classes), work, p.deploy_repeats,
                                                             p.deploy_clips)
            done("inference")
        if "data" in todo:
            from dlkdd.bench.data_path import bench_data

            kd = result.get("kd_step")
            result["data"] = bench_data(cfg, manifest, dev, p.decode_frames, p.decode_clips, p.loader_workers,
                                        p.loader_clips,
                                        step_clips_per_s=(kd["batch"] / kd["student_s_per_step"]) if kd else None,
                                        e2e=kd.get("e2e") if kd else None, inference=result.get("inference"))
            done("data")
        if "precompute" in todo:
            from dlkdd.bench.precompute import bench_precompute

            result["precompute"] = bench_precompute(cfg, list(manifest.classes), work, dev, p.precompute_clips,
                                                    p.precompute_views)
            done("precompute")
        if "epoch" in todo:
            from dlkdd.bench.epoch import bench_student_epoch

            result["epoch"] = bench_student_epoch(cfg, manifest, work, dev, int(steps) if steps else p.epoch_steps,
                                                  p.epoch_workers, p.epoch_rounds)
            done("epoch")
        if "pose" in todo:
            from dlkdd.bench.pose import bench_pose

            result["pose"] = bench_pose(cfg, manifest, p.pose_clips, student=p.pose_student, estimator=pose_estimator)
            done("pose")
        result["seconds"] = time.perf_counter() - t_start
        return result
    finally:
        torch.set_num_threads(threads_before)
        if tmp is not None:
            tmp.cleanup()
