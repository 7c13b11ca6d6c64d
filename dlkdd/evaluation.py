"""``dlkdd evaluate`` and ``dlkdd predict``: any self-contained checkpoint on videos.

Multi-view testing: ``clips`` temporal windows evenly spaced over the video x ``crops`` spatial
crops (1: centre; 3: both ends and the centre of the long side), logits averaged per video.
In: checkpoint + manifest (``evaluate``) or video paths (``predict``); out: metrics dicts
(``top1``, ``top5``, ``n``, ``per_class``, ``confusion``) or per-video top-k predictions, with
sliding windows (label and time range per window) for long videos.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["test_views", "load_model", "evaluate_checkpoint", "plot_confusion", "predict_video"]


def test_views(num_frames: int, height: int, width: int, clip_cfg: Any, clips: int = 1, crops: int = 1) -> list:
    """``clips`` x ``crops`` fixed evaluation views (clips=crops=1: the centred view)."""
    from dataclasses import replace

    from dlkdd.data.views import center_view

    base = center_view(num_frames, clip_cfg, height, width)
    span = (clip_cfg.frames - 1) * clip_cfg.stride + 1
    if clips <= 1:
        starts = [base.start]
    else:
        last = max(0, num_frames - span)
        starts = sorted({int(round(s)) for s in np.linspace(0, last, clips)}) if last > 0 else [0] * clips
    if crops <= 1:
        boxes = [(base.y0, base.x0)]
    else:
        if base.w < 1.0 - 1e-9:  # landscape: slide along x
            boxes = [(base.y0, float(x)) for x in np.linspace(0.0, 1.0 - base.w, crops)]
        else:
            boxes = [(float(y), base.x0) for y in np.linspace(0.0, 1.0 - base.h, crops)]
    return [replace(base, start=s, y0=y0, x0=x0) for s in starts for (y0, x0) in boxes]


class _MultiView:
    """Dataset of (stacked test views of one video, label, key)."""

    def __init__(self, manifest: Any, clip_cfg: Any, clips: int, crops: int):
        self.manifest, self.clip_cfg, self.clips, self.crops = manifest, clip_cfg, clips, crops

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i: int):
        import torch

        from dlkdd.data.views import cut_views

        e = self.manifest[i]
        clips, _ = cut_views(e.path, lambda info: test_views(info.num_frames, info.height, info.width, self.clip_cfg,
                                                              self.clips, self.crops), self.clip_cfg.size)
        return torch.stack(clips), int(e.label), e.key


def load_model(ckpt_path: str | Path, device: Any = "cpu"):
    """``(model in eval mode on device, checkpoint dict)`` from a self-contained checkpoint."""
    from dlkdd.models.build import model_from_checkpoint
    from dlkdd.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt, str(ckpt_path)).to(device).eval()
    return model, ckpt


def _amp_of(ckpt: dict, amp: str | None) -> str:
    """``amp`` if given, else the checkpoint's ``train.amp`` (``auto`` for checkpoints without one)."""
    if amp is not None:
        return amp
    return str(((ckpt.get("config") or {}).get("train") or {}).get("amp") or "auto")


def _clip_cfg(ckpt: dict, overrides: Any = None):
    from dlkdd.config import config_from_dict

    cfg = config_from_dict(ckpt.get("config") or {})
    return overrides if overrides is not None else cfg.clip


def evaluate_checkpoint(ckpt_path: str | Path, manifest: Any, device: str = "auto", clips: int = 1, crops: int = 1,
                        workers: int = 2, clip_cfg: Any = None, progress: bool = True,
                        amp: str | None = None) -> dict[str, Any]:
    """Top-1/top-5, per-class accuracy and confusion of a checkpoint on ``manifest``.

    ``amp``: ``auto|bf16|fp32`` (default: the checkpoint's ``train.amp``; see :mod:`dlkdd.train.amp`);
    the one used is returned as ``amp``."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from dlkdd.errors import DataError
    from dlkdd.train.amp import autocast, resolve_amp
    from dlkdd.utils import resolve_device

    dev = resolve_device(device)
    model, ckpt = load_model(ckpt_path, dev)
    classes = list(ckpt.get("classes") or [])
    if classes != list(manifest.classes):
        raise DataError(f"{ckpt_path} was trained on classes {classes}, the evaluation list has "
                        f"{list(manifest.classes)}")
    cc = _clip_cfg(ckpt, clip_cfg)
    C = len(classes)
    ds = _MultiView(manifest, cc, clips, crops)
    loader = DataLoader(ds, batch_size=None, num_workers=workers, prefetch_factor=2 if workers else None)
    conf = np.zeros((C, C), dtype=np.int64)
    top5 = 0
    predictions = []
    amp_used = resolve_amp(_amp_of(ckpt, amp), dev, "evaluation")
    with torch.inference_mode(), autocast(torch.bfloat16 if amp_used == "bf16" else None, dev):
        for x, y, key in tqdm(loader, total=len(ds), desc="evaluate", unit="video", disable=not progress):
            logits = model(x.to(dev)).float().mean(0)
            pred = int(logits.argmax())
            conf[int(y), pred] += 1
            k = min(5, C)
            top5 += int(int(y) in logits.topk(k).indices.tolist())
            predictions.append({"key": key, "label": int(y), "pred": pred})
    n = int(conf.sum())
    support = conf.sum(1)
    per_class = [float(100.0 * conf[c, c] / support[c]) if support[c] else None for c in range(C)]
    return {"checkpoint": str(ckpt_path), "kind": ckpt.get("kind"), "top1": 100.0 * float(np.trace(conf)) / max(1, n),
            "top5": 100.0 * top5 / max(1, n), "n": n, "classes": classes, "per_class": per_class,
            "confusion": conf.tolist(), "views": {"clips": clips, "crops": crops}, "predictions": predictions,
            "amp": amp_used}


def plot_confusion(metrics: dict[str, Any], path: str | Path) -> Path:
    """Confusion matrix (rows: true, columns: predicted) with per-class accuracy, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(metrics["confusion"])
    classes = metrics["classes"]
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.55 * n + 2.5), max(3.5, 0.5 * n + 2)))
    ax.imshow(conf, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if conf[i, j]:
                ax.text(j, i, str(conf[i, j]), ha="center", va="center",
                        color="white" if conf[i, j] > conf.max() / 2 else "black", fontsize=8)
    labels = [f"{c} ({a:.0f}%)" if a is not None else c for c, a in zip(classes, metrics["per_class"])]
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (per-class accuracy)")
    ax.set_title(f"{Path(metrics['checkpoint']).name}: top-1 {metrics['top1']:.1f}%  top-5 {metrics['top5']:.1f}%  "
                 f"(n={metrics['n']})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def predict_video(model: Any, ckpt: dict, path: str | Path, device: Any, topk: int = 5, window_stride: int = 0,
                  max_windows: int = 64, clip_cfg: Any = None, amp: str | None = None) -> dict[str, Any]:
    """Top-k labels of one video; for videos longer than 1.5 clip spans, sliding windows
    (``window_stride`` frames apart, default half a span) each with its label and time range,
    and the video's label from the windows' averaged logits. ``amp`` as in :func:`evaluate_checkpoint`."""
    import torch

    from dlkdd.train.amp import autocast_dtype, infer

    from dlkdd.data.video import probe
    from dlkdd.data.views import center_view, load_clips
    from dataclasses import replace

    cc = _clip_cfg(ckpt, clip_cfg)
    classes = list(ckpt.get("classes") or [])
    info = probe(path)
    span = (cc.frames - 1) * cc.stride + 1
    base = center_view(info.num_frames, cc, info.height, info.width)
    if info.num_frames >= 1.5 * span:
        hop = int(window_stride) if window_stride > 0 else max(1, span // 2)
        starts = list(range(0, info.num_frames - span + 1, hop))[:max_windows]
    else:
        starts = [base.start]
    views = [replace(base, start=s) for s in starts]
    x = torch.stack(load_clips(path, views, cc.size)).to(device)
    logits = infer(model, x, x.shape[0], autocast_dtype(_amp_of(ckpt, amp), device), device)
    probs = logits.softmax(-1)
    k = min(topk, len(classes))

    def top(p: torch.Tensor) -> list[dict[str, Any]]:
        v, i = p.topk(k)
        return [{"label": classes[j], "prob": float(q)} for q, j in zip(v.tolist(), i.tolist())]

    fps = info.fps or 30.0
    windows = []
    if len(starts) > 1:
        for s, p in zip(starts, probs):
            windows.append({"start_s": round(s / fps, 3), "end_s": round((s + span) / fps, 3),
                            "top": top(p)[:min(k, 3)]})
    return {"video": str(path), "frames": info.num_frames, "fps": fps,
            "top": top(logits.mean(0).softmax(-1)), "windows": windows}


def format_predictions(results: Sequence[dict[str, Any]]) -> str:
    """A readable table of :func:`predict_video` results."""
    lines = []
    for r in results:
        lines.append(f"{r['video']}  ({r['frames']} frames, {r['fps']:.1f} fps)")
        for j, t in enumerate(r["top"], 1):
            lines.append(f"  {j}. {t['label']:<24s} {100 * t['prob']:6.2f}%")
        if r["windows"]:
            lines.append("  windows:")
            for w in r["windows"]:
                best = w["top"][0]
                lines.append(f"    {w['start_s']:7.2f}-{w['end_s']:7.2f} s  {best['label']:<20s} {100 * best['prob']:6.2f}%")
    return "\n".join(lines)
