"""Inference cost (the DL-KDD paper's Table 5): student vs enhancement-based vs two-stream.

For each profiled shape (batch 1, ``(1,3,T,S,S)``), :func:`dlkdd.models.profile.profile_model`
gives ``params``, ``gflops`` (FlopCounterMode: 2 FLOPs per multiply-accumulate), ``gmacs``
(= gflops / 2), ``peak_mem_mb`` and ``latency_ms`` of

- ``student``: R(2+1)D-BERT on the dark clip (what DL-KDD deploys);
- ``enhanced``: enhancement-based inference, ZeroDCE then the same classifier (the teacher);
- ``two_stream``: the classifier on the original and on the gamma-enhanced clip (shared weights,
  both passes, logits averaged; :class:`dlkdd.bench.models.TwoStream`).

All three share one classifier instance, so parameter counts differ only by the enhancer.
Paper figures (Chang, Chen & Tseng, DL-KDD, Table 5; R(2+1)D-34 + BERT, 64x112x112):
student 305.51 GFLOPs / 1599 MB, enhancement-based 310.28 GFLOPs / 2133 MB, two-stream about
twice the student's GFLOPs. Their "GFLOPs" match multiply-accumulates (compare with ``gmacs``);
their memory is GPU memory, whereas on CPU ``peak_mem_mb`` is profile_model's estimate of live
activation memory (weights excluded).
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["bench_inference", "PAPER_TABLE5"]

PAPER_TABLE5 = {
    "source": "DL-KDD (Chang, Chen & Tseng), Table 5: R(2+1)D-34 + BERT, 3x64x112x112",
    "student": {"gflops": 305.51, "peak_mem_mb": 1599.0},
    "enhanced": {"gflops": 310.28, "peak_mem_mb": 2133.0},
    "two_stream": {"gflops": 2 * 305.51, "peak_mem_mb": None, "note": "about twice the student's GFLOPs"},
}


VARIANTS = ("student", "enhanced", "two_stream")


def profile_variants(cfg: Any, num_classes: int, device: Any, repeats: int,
                     variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """Profiles of the ``variants`` (default all three) at ``cfg``'s backbone and clip shape (batch 1)."""
    from dlkdd.bench.models import TwoStream, bench_teacher
    from dlkdd.models.build import build_student
    from dlkdd.models.profile import profile_model

    shape = (1, 3, cfg.clip.frames, cfg.clip.size, cfg.clip.size)
    student = build_student(cfg, num_classes)
    teacher, note = bench_teacher(cfg, num_classes, classifier=student)
    two = TwoStream(student, cfg.enhancer.gamma)
    out: dict[str, Any] = {"backbone": cfg.model.backbone, "head": cfg.model.head, "input_shape": list(shape),
                           "enhancer": note, "gamma": cfg.enhancer.gamma}
    for name, model in (("student", student), ("enhanced", teacher), ("two_stream", two)):
        if name not in variants:
            continue
        log.info("profiling %s (%s, %s)", name, cfg.model.backbone, shape)
        out[name] = profile_model(model, shape, device=device, repeats=repeats)
    s = out["student"]
    for name in [v for v in ("enhanced", "two_stream") if v in out]:
        out[name]["gflops_vs_student"] = out[name]["gflops"] / s["gflops"]
        out[name]["latency_vs_student"] = out[name]["latency_ms"] / s["latency_ms"]
    return out


def bench_inference(cfg: Any, num_classes: int, shapes: Any, device: Any, repeats: int,
                    variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """``shapes``: ``[(label, backbone, frames, size[, head]), ...]``; the first is the preset's own.
    ``variants``: which of student / enhanced / two_stream to profile (the student always).

    Returns the first shape's ``student``/``enhanced``/``two_stream`` at the top level, every
    shape under ``by_shape`` and the paper's figures under ``paper_table5``.
    """
    from dlkdd.bench.presets import shape_config

    by_shape = []
    for label, backbone, frames, size, *head in shapes:
        # the paper's ARID has 11 classes; the FLOPs of the fc layer are negligible either way
        n = 11 if backbone.endswith("ig65m") and frames >= 64 else num_classes
        r = profile_variants(shape_config(cfg, backbone, frames, size, *head), n, device, repeats,
                             tuple(dict.fromkeys(("student", *variants))))
        r["label"], r["num_classes"] = label, n
        by_shape.append(r)
    first = by_shape[0]
    return {**{v: first[v] for v in VARIANTS if v in first},
            "input_shape": first["input_shape"], "backbone": first["backbone"], "by_shape": by_shape,
            "paper_table5": PAPER_TABLE5,
            "units": "gflops: FlopCounterMode FLOPs (2 per MAC); gmacs = gflops/2 (the paper's 'GFLOPs' look like "
                     "MACs); peak_mem_mb: CUDA max allocated, or on CPU an estimate of live activations"}
