"""``dlkdd evaluate`` and ``dlkdd predict``: any self-contained checkpoint on videos.

Multi-view testing: ``clips`` temporal windows evenly spaced over the video x ``crops`` spatial
crops (1: centre; 3: both ends and the centre of the long side), logits averaged per video.
In: checkpoint + manifest (``evaluate``) or video paths (``predict``); out: metrics dicts
(``top1``, ``top5``, ``n``, ``per_class``, ``confusion``) or per-video top-k predictions, with
sliding windows (label and time range per window) for long videos.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from dlkdd.config import config_from_dict
from dlkdd.data.dataset import ClipDataset, collate
from dlkdd.data.video import probe
from dlkdd.data.views import EvalGrid, center_view, load_clips
from dlkdd.data.workers import worker_context
from dlkdd.deploy.runtime import detect_format, load_for_predict
from dlkdd.errors import DataError
from dlkdd.models.build import model_from_checkpoint
from dlkdd.models.families import family_of_arch
from dlkdd.predictions import eval_view_spec
from dlkdd.train.checkpoint import load_checkpoint
from dlkdd.train.amp import autocast_dtype, infer, resolve_amp
from dlkdd.train.engine import evaluate
from dlkdd.utils import resolve_device, save_figure

log = logging.getLogger(__name__)

__all__ = ["EvalOptions", "PredictOptions", "load_model", "evaluate_checkpoint", "plot_confusion", "predict_video",
           "predict_videos", "format_predictions", "window_starts",
           "check_finite_outputs", "check_clip_fits", "LOGIT_LIMIT"]


def load_model(ckpt_path: str | Path, device: Any = "cpu"):
    """``(model in eval mode on device, checkpoint dict)`` from a self-contained checkpoint, or from
    a file written by ``dlkdd export`` (its runtime and its spec as the checkpoint dict)."""
    if detect_format(ckpt_path) is not None:
        return load_for_predict(ckpt_path, device)
    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt, str(ckpt_path)).to(device).eval()
    ckpt["_path"] = str(ckpt_path)  # named in errors about the model's outputs
    return model, ckpt


def _amp_of(ckpt: dict, amp: str | None) -> str:
    """``amp`` if given, else the checkpoint's ``train.amp`` (``auto`` for checkpoints without one)."""
    if amp is not None:
        return amp
    return str(((ckpt.get("config") or {}).get("train") or {}).get("amp") or "auto")


#: Largest |logit| accepted. A trained classifier's logits are tens at most (softmax saturates past a
#: gap of ~100: exp(-100) ~ 4e-44, below float32's smallest normal); 1e4 is far beyond that, and
#: float32 logits near its 3.4e38 maximum overflow to inf when views are summed or averaged.
LOGIT_LIMIT = 1e4


def check_finite_outputs(logits: Any, ckpt_path: Any, keys: Sequence[str]) -> None:
    """Refuse NaN/inf or overflowing (``|z| > LOGIT_LIMIT``) model outputs (``DataError`` naming the
    checkpoint and the first inputs) instead of reporting "nan%", a loss of 4e37 or class 0 for every clip."""
    z = torch.as_tensor(logits).detach().float().reshape(len(keys), -1) if len(keys) else torch.zeros(0, 1)
    ok = (torch.isfinite(z) & (z.abs() <= LOGIT_LIMIT)).all(1)
    if not bool(ok.all()):
        bad = [k for k, g in zip(keys, ok.tolist()) if not g]
        what = "NaN/inf" if not bool(torch.isfinite(z).all()) else f"logits beyond +-{LOGIT_LIMIT:g} (overflow)"
        raise DataError(f"{ckpt_path}: the model output {what} for {len(bad)} input(s) ({', '.join(bad[:3])}); "
                        f"the checkpoint's weights or normalisation are degenerate: retrain or use another checkpoint")


def check_clip_fits(model: Any, arch: Any, clip_cfg: Any, ckpt_path: Any) -> None:
    """Refuse, before decoding, clips longer than the model of checkpoint ``arch`` takes (its BERT head's
    position embeddings; :func:`dlkdd.deploy.spec.frame_range`)."""
    if not isinstance(model, torch.nn.Module):  # an exported model checks its inputs against its spec
        return
    from dlkdd.deploy.spec import frame_range

    hi = frame_range(model, arch or {})[1]
    if hi is not None and int(clip_cfg.frames) > hi:
        raise DataError(f"{ckpt_path}: its BERT head takes clips of at most {hi} frames, clip.frames is "
                        f"{clip_cfg.frames}; use --set clip.frames={hi} or fewer (longer videos are scored in "
                        f"windows by `dlkdd predict`)")


def _clip_cfg(ckpt: dict, overrides: Any = None):
    cfg = config_from_dict(ckpt.get("config") or {})
    return overrides if overrides is not None else cfg.clip


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How :func:`evaluate_checkpoint` scores: ``clips`` x ``crops`` views per video, loader ``workers``,
    ``clip_cfg`` (None: the checkpoint's clip settings), ``amp`` (None: the checkpoint's ``train.amp``)."""

    clips: int = 1
    crops: int = 1
    workers: int = 2
    clip_cfg: Any = None
    progress: bool = True
    amp: str | None = None


def evaluate_checkpoint(ckpt_path: str | Path, manifest: Any, device: str = "auto", opts: EvalOptions | None = None,
                        **options: Any) -> dict[str, Any]:
    """Top-1/top-5, per-class accuracy, confusion and per-clip predictions of a checkpoint on
    ``manifest``, each video scored by the mean logits of its ``clips`` x ``crops`` test views
    (:class:`~dlkdd.data.views.EvalGrid`) through :func:`dlkdd.train.engine.evaluate`. ``opts``: an
    :class:`EvalOptions`, or its fields as keywords (``options``). ``amp``: ``auto|bf16|fp32`` (default:
    the checkpoint's ``train.amp``; see :mod:`dlkdd.train.amp`); the one used is returned as ``amp``."""
    o = opts if opts is not None else EvalOptions(**options)
    clips, crops, workers, clip_cfg, progress, amp = o.clips, o.crops, o.workers, o.clip_cfg, o.progress, o.amp
    dev = resolve_device(device)
    model, ckpt = load_model(ckpt_path, dev)
    own = family_of_arch(ckpt.get("arch") or {}).own_evaluation(ckpt, ckpt_path, manifest, dev, o)
    if own is not None:  # a family whose input is not decoded video (pose) scores the list itself
        return own
    classes = list(ckpt.get("classes") or [])
    if classes != list(manifest.classes):
        raise DataError(f"{ckpt_path} was trained on classes {classes}, the evaluation list has "
                        f"{list(manifest.classes)}")
    cc = _clip_cfg(ckpt, clip_cfg)
    check_clip_fits(model, ckpt.get("arch"), cc, ckpt_path)
    ds = ClipDataset(manifest, cc, EvalGrid(cc, clips, crops))
    loader = DataLoader(ds, batch_size=1, num_workers=workers, prefetch_factor=2 if workers else None,
                        collate_fn=collate, multiprocessing_context=worker_context() if workers else None)
    amp_used = resolve_amp(_amp_of(ckpt, amp), dev, "evaluation")
    m = evaluate(model, loader, dev, len(classes), amp=amp_used, progress=progress, predictions=True)
    rows = m.pop("predictions")
    check_finite_outputs(rows["logits"], ckpt_path, rows["keys"])
    probs = rows["logits"].softmax(-1)
    predictions = [{"key": k, "label": int(y), "pred": int(p.argmax()), "probs": p.tolist()}
                   for k, y, p in zip(rows["keys"], rows["labels"], probs)]
    return {"checkpoint": str(ckpt_path), "kind": ckpt.get("kind"), "seed": (ckpt.get("config") or {}).get("seed"),
            **m, "classes": classes, "views": {"clips": clips, "crops": crops},
            "test_views": eval_view_spec(cc, clips, crops), "predictions": predictions, "amp": amp_used}


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
    return save_figure(fig, path)


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """How :func:`predict_video` scores: the ``topk`` labels, sliding windows ``window_stride`` frames apart
    (0: half a clip span), at most ``max_windows``; ``clip_cfg`` and ``amp`` as in :class:`EvalOptions`."""

    topk: int = 5
    window_stride: int = 0
    max_windows: int = 64
    clip_cfg: Any = None
    amp: str | None = None


def predict_video(model: Any, ckpt: dict, path: str | Path, device: Any, opts: PredictOptions | None = None,
                  **options: Any) -> dict[str, Any]:
    """Top-k labels of one video; for videos longer than 1.5 clip spans, sliding windows
    (``window_stride`` frames apart, default half a span) each with its label and time range,
    and the video's label from the windows' averaged logits. ``opts``: a :class:`PredictOptions`,
    or its fields as keywords."""
    o = opts if opts is not None else PredictOptions(**options)
    topk, window_stride, max_windows, clip_cfg, amp = o.topk, o.window_stride, o.max_windows, o.clip_cfg, o.amp
    own = family_of_arch(ckpt.get("arch") or {}).own_predictions(model, ckpt, [path], device, o)
    if own is not None:  # a family whose models do not take video clips (pose: the video is posed first)
        if isinstance(own[0], Exception):
            raise own[0]
        return own[0]
    cc = _clip_cfg(ckpt, clip_cfg)
    check_clip_fits(model, ckpt.get("arch"), cc, ckpt.get("_path", "the checkpoint"))
    classes = list(ckpt.get("classes") or [])
    info = probe(path)
    span = (cc.frames - 1) * cc.stride + 1
    base = center_view(info.num_frames, cc, info.height, info.width)
    if info.num_frames >= 1.5 * span:
        starts = window_starts(info.num_frames, span, int(window_stride) if window_stride > 0 else max(1, span // 2),
                               max_windows)
    else:
        starts = [base.start]
    views = [dataclasses.replace(base, start=s) for s in starts]
    x = torch.stack(load_clips(path, views, cc.size)).to(device)
    logits = infer(model, x, x.shape[0], autocast_dtype(_amp_of(ckpt, amp), device), device)
    check_finite_outputs(logits, ckpt.get("_path", "the checkpoint"), [str(path)] * len(logits))
    k = min(topk, len(classes))
    fps = info.fps or 30.0
    windows = window_tops(starts, span, logits.softmax(-1), classes, k, fps)
    note = None
    if info.num_frames < span:  # the clip repeats the video's frames (data.views), which the model never saw
        note = (f"the video has {info.num_frames} frame(s), the model's clips span {span} "
                f"({cc.frames} frames every {cc.stride}): its frames are looped to fill one clip")
        log.warning("%s: %s", path, note)
    return {"video": str(path), "frames": info.num_frames, "fps": fps, "note": note,
            "top": top_labels(logits.mean(0).softmax(-1), classes, k), "windows": windows,
            "scored": {"windows": len(starts), "start_s": round(starts[0] / fps, 3),
                       "end_s": round(min(info.num_frames, starts[-1] + span) / fps, 3),
                       "duration_s": round(info.num_frames / fps, 3)}}


def predict_videos(model: Any, ckpt: dict, paths: Sequence[str | Path], device: Any,
                   opts: PredictOptions | None = None) -> list[dict[str, Any] | Exception]:
    """:func:`predict_video` of each video, or the :class:`~dlkdd.errors.DlkddError` that kept it from being
    scored; a family that predicts itself gets all the videos at once (the pose family poses them in one go)."""
    from dlkdd.errors import DlkddError

    o = opts if opts is not None else PredictOptions()
    own = family_of_arch(ckpt.get("arch") or {}).own_predictions(model, ckpt, list(paths), device, o)
    if own is not None:
        return own
    out: list[dict[str, Any] | Exception] = []
    for p in paths:
        try:
            out.append(predict_video(model, ckpt, p, device, o))
        except DlkddError as e:
            out.append(e)
    return out


def top_labels(p: torch.Tensor, classes: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` most probable classes of the probabilities ``p`` (C,): ``[{"label", "prob"}]``."""
    v, i = p.topk(k)
    return [{"label": classes[j], "prob": float(q)} for q, j in zip(v.tolist(), i.tolist())]


def window_tops(starts: Sequence[int], span: int, probs: torch.Tensor, classes: Sequence[str], k: int,
                fps: float) -> list[dict[str, Any]]:
    """Per sliding window (first video frame ``starts[w]``, ``span`` frames, probabilities ``probs[w]``): its time
    range in seconds and top classes (3 at most); ``[]`` for a single window (the video's own top says it all)."""
    if len(starts) <= 1:
        return []
    return [{"start_s": round(s / fps, 3), "end_s": round((s + span) / fps, 3), "top": top_labels(p, classes, k)[:min(k, 3)]}
            for s, p in zip(starts, probs)]


def window_starts(num_frames: int, span: int, hop: int, max_windows: int = 64) -> list[int]:
    """First frames of the sliding windows of ``span`` frames over a video of ``num_frames``: every
    ``hop`` frames, plus one ending at the last frame; when that is more than ``max_windows``, that
    many spread evenly from the first frame to the last window (the whole video is covered either way,
    with wider gaps between windows)."""
    last = max(0, num_frames - span)
    starts = list(range(0, last + 1, max(1, hop)))
    if starts[-1] != last:
        starts.append(last)
    if len(starts) > max_windows:
        starts = sorted({int(round(x)) for x in np.linspace(0, last, max_windows)})
    return starts


def format_predictions(results: Sequence[dict[str, Any]]) -> str:
    """A readable table of :func:`predict_video` results."""
    lines = []
    for r in results:
        lines.append(f"{r['video']}  ({r['frames']} frames, {r['fps']:.1f} fps)")
        if r.get("note"):
            lines.append(f"  note: {r['note']}")
        sc = r.get("scored")
        if sc and sc["windows"] > 1:
            lines.append(f"  scored {sc['windows']} windows spread over {sc['start_s']:.2f}-{sc['end_s']:.2f} s "
                         f"of {sc['duration_s']:.2f} s")
        for j, t in enumerate(r["top"], 1):
            lines.append(f"  {j}. {t['label']:<24s} {100 * t['prob']:6.2f}%")
        if r["windows"]:
            lines.append("  windows:")
            for w in r["windows"]:
                best = w["top"][0]
                lines.append(f"    {w['start_s']:7.2f}-{w['end_s']:7.2f} s  {best['label']:<20s} {100 * best['prob']:6.2f}%")
    return "\n".join(lines)
