"""What posing costs at inference: a pose checkpoint on a new video (``dlkdd predict``), stage by stage.

Per real clip (``clips`` of them spread evenly over the training list, ``configs/arid6-pose.yaml``'s pose settings:
every ``pose.stride``-th frame, at most ``pose.max_frames``), each stage timed once, in this order:

- ``decode``: the posed frames (:class:`dlkdd.data.video.VideoReader`), ms per clip;
- ``enhance``: each enhancer of ``kinds`` on those frames, as the pose stage runs it (batches of 16, rounded
  to uint8): ``none`` (0), ``gamma`` (the teacher's), ``zerodce`` (timed on at most ``zerodce_frames``
  frames, ms per frame; the official weights when present, else a random ZeroDCE of the same cost);
- ``blazepose``: BlazePose "full" (video mode) on the gamma and on the dark frames, ms per clip and frames/s;
- ``skeleton``: the skeleton network (``pose.net`` / ``pose.width``, random weights: the cost is the same) on
  the clip's windows as ``predict`` cuts them (:func:`dlkdd.pose.infer.predict_posed`), ms per clip;
- ``total``: decode + gamma + BlazePose (gamma) + skeleton, per clip and per window.

``video_student``: the R(2+1)D student's per-clip latency beside it (decode of one clip at its shape +
the eager forward, :func:`dlkdd.models.profile.profile_model`), when ``student`` is given. ``estimator``:
a stand-in pose function (tests); by default BlazePose, which needs mediapipe (the pose environment).
"""
from __future__ import annotations

import logging
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["bench_pose", "pose_table"]


def _ms(t0: float) -> float:
    return 1000.0 * (time.perf_counter() - t0)


def _enhance(frames: np.ndarray, enhancer: Any) -> np.ndarray:
    from dlkdd.pose.extract import _ENHANCE_BATCH

    out = []
    for s in range(0, len(frames), _ENHANCE_BATCH):
        x = torch.from_numpy(frames[s:s + _ENHANCE_BATCH]).permute(0, 3, 1, 2).float().div_(255)
        out.append(enhancer(x).clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def _enhancers(cfg: Any, kinds: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    from pathlib import Path

    from dlkdd.models.enhancers import GammaCorrection
    from dlkdd.models.zerodce import ZeroDCEEnhancer

    mods, notes = {}, {}
    for k in kinds:
        if k == "gamma":
            mods[k], notes[k] = GammaCorrection(cfg.enhancer.gamma), f"gamma {cfg.enhancer.gamma}"
        elif k == "zerodce":
            if Path(cfg.enhancer.weights).is_file():
                from dlkdd.models.enhancers import enhancer_from_spec, enhancer_spec

                mods[k] = enhancer_from_spec(dict(enhancer_spec(cfg.enhancer), kind="zerodce"))
                notes[k] = f"ZeroDCE ({Path(cfg.enhancer.weights).name})"
            else:
                mods[k], notes[k] = ZeroDCEEnhancer(), "ZeroDCE (random init; official weights absent; same cost)"
            mods[k].eval()
    return mods, notes


@torch.inference_mode()
def bench_pose(cfg: Any, manifest: Any, clips: int, kinds: Sequence[str] = ("gamma", "zerodce"),
               zerodce_frames: int = 8, student: tuple | None = None, student_repeats: int = 2,
               estimator: tuple[Callable, str] | None = None) -> dict[str, Any]:
    """See the module docstring. ``student``: ``(label, backbone, frames, size, head)`` of the video student."""
    from dlkdd.data.video import VideoReader
    from dlkdd.pipeline.evaluate import PredictOptions
    from dlkdd.pose.extract import _default_estimator
    from dlkdd.pose.infer import predict_posed
    from dlkdd.pose.sampling import posed_frames
    from dlkdd.pose.skeleton import SkeletonNet, skeleton_arch

    fn = (estimator or _default_estimator(cfg.pose))[0]
    enh, notes = _enhancers(cfg, kinds)
    classes = list(manifest.classes)
    net = SkeletonNet(len(classes), cfg.pose.net, cfg.pose.width, cfg.pose.dropout).eval()
    ckpt = {"classes": classes, "arch": skeleton_arch(cfg.pose, len(classes)), "_path": "bench"}
    rows = []
    picks = sorted({int(round(i)) for i in np.linspace(0, len(manifest) - 1, max(1, clips))})
    for e in [manifest[i] for i in picks]:  # spread over the list (arid6's is sorted by class)
        r: dict[str, Any] = {"clip": e.key}
        t0 = time.perf_counter()
        with VideoReader(e.path) as vr:
            info, n = vr.info, vr.num_frames
            frames = vr.get(posed_frames(n, cfg.pose.stride, cfg.pose.max_frames))
        r["decode_ms"], r["frames"], r["posed"] = _ms(t0), n, len(frames)
        r["size"] = list(frames.shape[1:3])
        enhanced = {"none": frames}
        for k, m in enh.items():
            part = frames[:zerodce_frames] if k == "zerodce" else frames
            t0 = time.perf_counter()
            out = _enhance(part, m)
            r[f"{k}_ms_per_frame"] = _ms(t0) / len(part)
            if k != "zerodce":
                enhanced[k] = out
        for k in [k for k in ("gamma", "none") if k in enhanced]:
            t0 = time.perf_counter()
            kp, mask = fn(enhanced[k])
            ms = _ms(t0)
            r[f"blazepose_{k}_ms"], r[f"blazepose_{k}_fps"] = ms, len(frames) / (ms / 1000.0)
            r[f"found_{k}"] = float(np.mean(mask)) if len(mask) else 0.0
            if k == "gamma" or "gamma" not in enhanced:
                posed = (kp, mask, n)
        t0 = time.perf_counter()
        res = predict_posed(net, ckpt, cfg, "gamma", e.path, posed, info, "cpu", PredictOptions())
        r["skeleton_ms"], r["windows"] = _ms(t0), res["scored"]["windows"]
        k = "gamma" if "gamma" in enhanced else "none"
        r["total_ms"] = (r["decode_ms"] + r.get("gamma_ms_per_frame", 0.0) * len(frames) + r[f"blazepose_{k}_ms"]
                         + r["skeleton_ms"])
        r["total_ms_per_window"] = r["total_ms"] / r["windows"]
        if "blazepose_none_ms" in r:  # a student's / baseline's path: the dark frames, no enhancer
            r["total_dark_ms"] = r["decode_ms"] + r["blazepose_none_ms"] + r["skeleton_ms"]
        log.info("pose bench %s: %d posed frames, %.0f ms (BlazePose %.1f frames/s)", e.key, len(frames),
                 r["total_ms"], r.get(f"blazepose_{k}_fps", 0.0))
        rows.append(r)
    if hasattr(fn, "close"):
        fn.close()
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    out: dict[str, Any] = {"clips": rows, "median": {k: statistics.median(r[k] for r in rows) for k in keys},
                           "enhancers": notes, "zerodce_frames": zerodce_frames, "pose": dict(vars(cfg.pose)),
                           "clip": {"frames": cfg.clip.frames, "stride": cfg.clip.stride},
                           "skeleton_params": sum(p.numel() for p in net.parameters()),
                           "estimator": "stand-in" if estimator else "BlazePose full (mediapipe)",
                           "threads": torch.get_num_threads()}
    if student is not None:
        out["video_student"] = _video_student(cfg, manifest, classes, student, student_repeats)
    return out


def _video_student(cfg: Any, manifest: Any, classes: list, student: tuple, repeats: int) -> dict[str, Any]:
    """The R(2+1)D student on one clip: decode + resize at its shape, and its eager forward (batch 1)."""
    from dlkdd.bench.presets import shape_config
    from dlkdd.data.views import center_view, load_clips
    from dlkdd.models.build import build_student
    from dlkdd.models.profile import profile_model

    label, backbone, frames, size, head = student
    scfg = shape_config(cfg, backbone, frames, size, head).replace(**{"clip.stride": 2, "model.pretrained": ""})
    e = manifest[0]
    from dlkdd.data.video import probe

    info = probe(e.path)
    view = center_view(info.num_frames, scfg.clip, info.height, info.width)
    t0 = time.perf_counter()
    load_clips(e.path, [view], scfg.clip.size)
    decode = _ms(t0)
    prof = profile_model(build_student(scfg, len(classes)).eval(), (1, 3, frames, size, size), device="cpu",
                         repeats=repeats)
    return {"label": label, "backbone": backbone, "head": head, "input": [3, frames, size, size],
            "decode_ms": decode, "forward_ms": prof["latency_ms"], "gmacs": prof["gmacs"],
            "total_ms": decode + prof["latency_ms"]}


def pose_table(p: dict[str, Any]) -> list[str]:
    """The report's section (Markdown lines)."""
    m, c = p["median"], p["clips"]
    posed = statistics.median(r["posed"] for r in c)
    size = "x".join(str(v) for v in reversed(c[0]["size"]))
    L = [f"### Posing at inference (a pose checkpoint on a new video; {len(c)} clip(s), median)", "",
         f"Per clip: {posed:.0f} posed frames ({size}, pose.stride {p['pose']['stride']}, at most "
         f"{p['pose']['max_frames']}), pose estimator: {p['estimator']}; skeleton network {p['pose']['net']} width "
         f"{p['pose']['width']} ({p['skeleton_params']:,} parameters) on windows of {p['clip']['frames']} posed "
         f"frames; {p['threads']} torch thread(s). Each row is the median over the clips (a total "
         "is not the sum of the medians above it).", ""]

    def f(x: Any, nd: int = 1) -> str:
        return "-" if x is None else f"{x:,.{nd}f}"

    rows = [["decode the posed frames", f(m["decode_ms"]), f(m["decode_ms"] / posed, 2), ""]]
    for k, note in p["enhancers"].items():
        v = m.get(f"{k}_ms_per_frame")
        extra = f"timed on {p['zerodce_frames']} frames" if k == "zerodce" else ""
        rows.append([f"enhance: {note}", f(v * posed if v is not None else None), f(v, 2), extra])
    for k, what in (("gamma", "BlazePose on the gamma frames (teacher)"), ("none", "BlazePose on the dark frames "
                                                                                   "(student / baseline)")):
        if f"blazepose_{k}_ms" in m:
            rows.append([what, f(m[f"blazepose_{k}_ms"]), f(m[f"blazepose_{k}_ms"] / posed, 2),
                         f"{m[f'blazepose_{k}_fps']:.1f} frames/s; a person in {100 * m[f'found_{k}']:.0f}% "
                         "of frames"])
    rows.append(["skeleton network (all windows)", f(m["skeleton_ms"], 2), "", f"{statistics.median(r['windows'] for r in c):.0f} window(s)"])
    rows.append(["**total** (decode + gamma + BlazePose + skeleton)", f"**{f(m['total_ms'])}**",
                 f(m["total_ms"] / posed, 2), f"{f(m['total_ms_per_window'])} ms per window"])
    if "total_dark_ms" in m:
        rows.append(["total, student / baseline (decode + BlazePose on the dark frames + skeleton)",
                     f(m["total_dark_ms"]), f(m["total_dark_ms"] / posed, 2), ""])
    if "zerodce_ms_per_frame" in m:
        z = m["total_ms"] + (m["zerodce_ms_per_frame"] - m.get("gamma_ms_per_frame", 0.0)) * posed
        rows.append(["total with ZeroDCE instead of gamma", f(z), f(z / posed, 2), ""])
    v = p.get("video_student")
    if v:
        rows.append([f"beside it: {v['label']} student, one {'x'.join(map(str, v['input'][1:]))} clip (decode + "
                     f"forward)", f(v["total_ms"]), "", f"decode {f(v['decode_ms'])} + forward {f(v['forward_ms'])} ms; "
                     f"{v['gmacs']:.1f} GMACs"])
    L += ["| stage | ms / clip | ms / posed frame | |", "|---|---|---|---|"]
    L += ["| " + " | ".join(r) + " |" for r in rows]
    return L
