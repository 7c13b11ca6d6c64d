"""Benchmark presets (model, clip shape, batch, step counts) and the config each runs on.

- ``tiny``: the smoke-test network ``r2plus1d_tiny`` + BERT on 4x32x32 clips, batch 2, a synthetic
  dataset written to a temporary folder; seconds, for the test that keeps ``dlkdd bench`` working.
- ``mini``: ``configs/arid6-mini.yaml``'s settings - R(2+1)D-18 + BERT, 16x56x56, batch 8, on
  ``../shared/data/arid6`` when present (else a synthetic set); also profiles inference at the
  paper's shape (R(2+1)D-34 + BERT, 3x64x112x112, batch 1).
- ``light``: the lightweight student of ``configs/arid6-light.yaml`` (issue 24) - EfficientNet-Lite0 + average
  head, 16x112x112 - inference only on a CPU: GMACs, parameters and latency of each backbone at that clip
  size beside R(2+1)D-18/34 (``backbones``: torch eager, ONNX Runtime fp32 and static int8, timed round-robin
  in one run) and R(2+1)D-34 + BERT at the paper's 64x112x112.
- ``pose``: what posing costs at inference (the ``pose`` part, :mod:`dlkdd.bench.pose`): decode, enhancer,
  BlazePose and the skeleton network per real arid6 clip at ``configs/arid6-pose.yaml``'s pose settings, beside
  the R(2+1)D-18 student's per-clip latency at 16x112x112; BlazePose needs mediapipe: run it with
  ``.venv-pose/bin/dlkdd bench --preset pose``.
- ``paper``: the DL-KDD paper's R(2+1)D-34 (IG65M layout) + BERT, 64x112x112, batch 8
  (Chang, Chen & Tseng, DL-KDD, Sec. 4 and Table 5). The published IG65M weights are not loaded:
  costs do not depend on the weights' values. On a CPU only ``inference`` and ``data`` run by
  default (a training step there takes minutes), and without the deployed-formats table.

:func:`bench_config` returns the :class:`~dlkdd.config.Config` of a preset, with the dataset
resolved (``work_dir`` receives a synthetic set when the real one is absent).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["BenchPreset", "PRESETS", "ALL_PARTS", "PARTS", "bench_config", "shape_config", "ARID6"]

ALL_PARTS = ("kd", "inference", "data", "precompute", "epoch")
#: every part ``--parts`` takes: ALL_PARTS and ``pose`` (BlazePose: the pose environment; the ``pose`` preset's)
PARTS = ALL_PARTS + ("pose",)
ARID6 = Path("../shared/data/arid6")


@dataclass(frozen=True)
class BenchPreset:
    name: str
    backbone: str
    frames: int
    size: int
    resize: int
    stride: int
    batch: int
    normalize: str = "dataset"
    head: str = "bert"
    kd_warmup: int = 1
    kd_steps: int = 5  # timed steps per variant (median reported)
    e2e_steps: int = 4  # timed steps per end-to-end variant (after 1 warm-up step)
    mem_steps: int = 2  # steps run by each peak-memory probe process
    # inference: (label, backbone, frames, size[, head]) profiled at batch 1 (head: the preset's when absent)
    inference: tuple[tuple, ...] = ()
    inference_repeats: int = 3
    inference_variants: tuple[str, ...] = ("student", "enhanced", "two_stream")  # dlkdd/bench/inference.py
    # (label, backbone, head) side by side at the preset's clip size: eager + ONNX Runtime (dlkdd/bench/deploy.py)
    backbones: tuple[tuple[str, str, str], ...] = ()
    deploy_repeats: int = 7  # timed calls per exported format (0: no deploy table); see dlkdd/bench/deploy.py
    deploy_clips: int = 64  # test clips for the int8 vs fp32 agreement
    decode_frames: tuple[int, ...] = (16, 64)
    decode_clips: int = 24
    loader_workers: tuple[int, ...] = (0, 1, 2)
    loader_clips: int = 32
    precompute_clips: int = 12
    precompute_views: tuple[int, ...] = (1, 8)
    epoch_steps: int = 6  # batches per student-epoch variant (dlkdd.bench.epoch)
    epoch_workers: tuple[int, ...] = (0, 1, 2)
    epoch_rounds: int = 2
    cpu_parts: tuple[str, ...] = ALL_PARTS  # default parts on a machine without CUDA
    only_parts: tuple[str, ...] = ()  # default parts on any machine (the pose preset)
    # the pose part (dlkdd/bench/pose.py): clips timed, the pose section (configs/arid6-pose.yaml's), the student
    pose_clips: int = 3
    pose: dict[str, Any] = field(default_factory=dict)
    pose_student: tuple | None = None
    synth: dict[str, Any] = field(default_factory=lambda: {"classes": 6, "clips_per_class": 8, "frames": 72,
                                                           "size": (120, 160)})
    use_arid6: bool = True


PRESETS: dict[str, BenchPreset] = {
    "tiny": BenchPreset(
        name="tiny", backbone="r2plus1d_tiny", frames=4, size=32, resize=40, stride=2, batch=2,
        kd_warmup=1, kd_steps=2, e2e_steps=1, mem_steps=1,
        inference=(("r2plus1d_tiny+BERT", "r2plus1d_tiny", 4, 32),), inference_repeats=1, deploy_repeats=1,
        deploy_clips=3,
        decode_frames=(4, 16), decode_clips=4, loader_workers=(0, 1), loader_clips=4,
        precompute_clips=4, precompute_views=(1, 2), epoch_steps=1, epoch_workers=(0, 1), epoch_rounds=1,
        synth={"classes": 3, "clips_per_class": 3, "frames": 20, "size": (48, 64)}, use_arid6=False),
    "mini": BenchPreset(
        name="mini", backbone="r2plus1d_18", frames=16, size=56, resize=64, stride=2, batch=8,
        kd_warmup=1, kd_steps=3, e2e_steps=3, mem_steps=1,
        inference=(("mini: R(2+1)D-18+BERT", "r2plus1d_18", 16, 56),
                   ("paper: R(2+1)D-34+BERT", "r2plus1d_34_ig65m", 64, 112)),
        inference_repeats=2, decode_clips=24, loader_clips=32, precompute_clips=12),
    "light": BenchPreset(
        name="light", backbone="efficientnet_lite0", head="avg", frames=16, size=112, resize=128, stride=2, batch=8,
        normalize="inception",
        inference=(("light: EfficientNet-Lite0+avg", "efficientnet_lite0", 16, 112, "avg"),
                   ("paper: R(2+1)D-34+BERT", "r2plus1d_34_ig65m", 64, 112, "bert")),
        inference_repeats=2, inference_variants=("student",), deploy_repeats=0,
        backbones=(("EfficientNet-Lite0+avg", "efficientnet_lite0", "avg"), ("MobileNetV2+avg", "mobilenet_v2", "avg"),
                   ("R(2+1)D-18+BERT", "r2plus1d_18", "bert"), ("R(2+1)D-34+BERT", "r2plus1d_34", "bert")),
        cpu_parts=("inference",)),
    "pose": BenchPreset(
        name="pose", backbone="r2plus1d_18", frames=16, size=112, resize=128, stride=4, batch=1, head="avg",
        only_parts=("pose",), cpu_parts=("pose",), pose_clips=6,
        pose={"stride": 2, "max_frames": 64, "video": True, "net": "tcn", "width": 64},
        pose_student=("R(2+1)D-18 + average head", "r2plus1d_18", 16, 112, "avg")),
    "paper": BenchPreset(
        name="paper", backbone="r2plus1d_34_ig65m", frames=64, size=112, resize=128, stride=1, batch=8,
        normalize="kinetics", kd_warmup=1, kd_steps=3, e2e_steps=2, mem_steps=1,
        inference=(("paper: R(2+1)D-34+BERT", "r2plus1d_34_ig65m", 64, 112),),
        inference_repeats=2, decode_clips=16, loader_clips=16, precompute_clips=12,
        epoch_steps=4, epoch_workers=(4, 8), cpu_parts=("inference", "data"),
        deploy_repeats=0),  # no deploy table: eager takes ~18 s per 64x112x112 CPU call, int8 ~5x that (BENCHMARKS.md)
}


def _data_section(preset: BenchPreset, work_dir: Path) -> tuple[dict[str, Any], str]:
    """The ``data:`` section: arid6 when present (and wanted), else a synthetic set in ``work_dir``."""
    if preset.use_arid6 and (ARID6 / "arid6_train.txt").is_file():
        root = ARID6.resolve()
        return ({"format": "arid", "root": str(root / "clips"), "train_list": str(root / "arid6_train.txt"),
                 "test_list": str(root / "arid6_test.txt"), "mapping": str(root / "mapping_table.txt")},
                "arid6 (150 real ARID clips, ../shared/data/arid6)")
    from dlkdd.data.synth import make_synthetic

    s = dict(preset.synth)
    paths = make_synthetic(work_dir / "synth", classes=s["classes"], clips_per_class=s["clips_per_class"],
                           frames=s["frames"], size=tuple(s["size"]))
    desc = (f"synthetic ({s['classes']} classes x {s['clips_per_class']} clips, {s['frames']} frames "
            f"{s['size'][0]}x{s['size'][1]})")
    return ({k: paths[k] for k in ("root", "train_list", "test_list", "mapping")} | {"format": "arid"}, desc)


def bench_config(preset: BenchPreset, work_dir: str | Path, overrides: list[str] | None = None):
    """``(Config, data_description)`` of ``preset``; ``overrides``: ``["key=value", ...]``."""
    from dlkdd.config import config_from_dict

    data, desc = _data_section(preset, Path(work_dir))
    tree = {
        "name": f"bench-{preset.name}",
        "data": data,
        "clip": {"frames": preset.frames, "stride": preset.stride, "size": preset.size, "resize": preset.resize},
        "model": {"backbone": preset.backbone, "head": preset.head, "normalize": preset.normalize, "pretrained": ""},
        "enhancer": {"kind": "zerodce", "weights": str(Path("../shared/data/zerodce/Epoch99.pth").resolve())},
        "train": {"batch_size": preset.batch, "workers": 2, "lr": 1e-4},
        "cache": {"views": 8, "format": "zarr", "dir": str(Path(work_dir) / "cache")},
    }
    if preset.pose:
        tree["pose"] = dict(preset.pose)
    return config_from_dict(tree, list(overrides or [])), desc


def shape_config(cfg: Any, backbone: str, frames: int, size: int, head: str | None = None):
    """``cfg`` with another backbone (and head) and clip shape (for the inference profiles)."""
    resize = max(cfg.clip.resize, size)
    return cfg.replace(**{"model.backbone": backbone, "clip.frames": frames, "clip.size": size, "clip.resize": resize,
                          "model.head": head or cfg.model.head,
                          "model.normalize": "kinetics" if backbone.endswith("ig65m") else cfg.model.normalize})
