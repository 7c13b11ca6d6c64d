"""Zero-reference training of ZeroDCE on a dataset's own dark frames, and video enhancement.

Training (``dlkdd enhancer``): each epoch visits every training video once, takes
``enhancer.frames_per_clip`` random frames and one random ``enhancer.crop`` square crop of
them, and trains DCE-Net on batches of ``train.batch_size`` videos (``batch_size *
frames_per_clip`` images ``(N,3,crop,crop)``) with the four zero-reference losses
(:mod:`dlkdd.models.zerodce_losses`), Adam (lr ``enhancer.lr``, weight decay 1e-4) and
gradient-norm clipping at 0.1 - the optimiser settings of the official Zero-DCE training
script (Guo et al., CVPR 2020). It starts from ``enhancer.weights`` when that file exists
(fine-tuning), else from the official random initialisation. Bad videos follow ``data.on_bad_clip``
like every stage (:func:`dlkdd.data.prepare.prepare_data`). Outputs ``DIR/enhancer.pt`` (a
checkpoint of :mod:`dlkdd.train.checkpoint`: ``kind`` ``enhancer``, ``arch`` ``{"enhancer": spec}``,
``config``, ``model`` (the DCE-Net state dict), ``epoch`` (0-based, like every checkpoint),
``metrics``, ``history``) and ``DIR/metrics.json``.

- data: :class:`~dlkdd.data.dataset.FrameDataset` (random frames + one random crop per video).
- model: :class:`~dlkdd.models.zerodce.ZeroDCE`.
- loss: :func:`dlkdd.models.zerodce_losses.zero_reference_loss`.

Enhancement (``dlkdd enhance``): :func:`enhance_frames` maps uint8 ``(T,H,W,3)`` frames
through any enhancer in batches of frames; :func:`enhance_video` decodes a video, enhances
it, writes an H.264 MP4 and optionally a side-by-side preview PNG (:func:`save_preview`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dlkdd.data.dataset import FrameDataset, collate
from dlkdd.data.formats import data_format
from dlkdd.data.prepare import prepare_data
from dlkdd.data.video import decode, probe
from dlkdd.data.workers import worker_context
from dlkdd.data.writer import write_video
from dlkdd.errors import DataError, TrainingError, VideoError
from dlkdd.models.enhancers import enhancer_spec
from dlkdd.models.zerodce import ZeroDCE
from dlkdd.models.zerodce_losses import zero_reference_loss
from dlkdd.outputs import check_writable_dir
from dlkdd.train.checkpoint import save_checkpoint
from dlkdd.utils import atomic_path, atomic_write_json, resolve_device, seed_everything

log = logging.getLogger(__name__)

__all__ = ["train_enhancer", "enhance_frames", "enhance_video", "save_preview", "WEIGHT_DECAY", "GRAD_CLIP"]

WEIGHT_DECAY = 1e-4  # official Zero-DCE training script
GRAD_CLIP = 0.1  # official Zero-DCE training script (gradient-norm clipping)


def train_enhancer(cfg: Any, out_dir: str | Path, device: str | torch.device = "auto", progress: bool = True) -> dict[str, Any]:
    """Zero-reference training of ZeroDCE on ``cfg``'s training videos (see module docstring).

    Writes ``out_dir/enhancer.pt`` (after every epoch, atomically) and ``out_dir/metrics.json``;
    returns the metrics dict ``{"epochs": [{"epoch", "loss", "tv", "spa", "col", "exp",
    "images", "steps", "time_s"}, ...], "checkpoint": path, "init": weights or "random",
    "bad_videos": skipped keys}``. Raises :class:`DataError` for bad videos when
    ``data.on_bad_clip`` is ``error`` (they are skipped with a warning when it is ``skip``) and
    :class:`TrainingError` on a non-finite loss.
    """
    ecfg = cfg.enhancer
    out_dir = check_writable_dir(out_dir, "--out")  # before the first step, not after an epoch
    ckpt_path = out_dir / "enhancer.pt"
    dev = resolve_device(device if isinstance(device, str) else str(device))
    seed_everything(cfg.seed)

    data = prepare_data(cfg, need_test=False, progress=progress)
    manifest = data.train
    if len(manifest) == 0:
        raise DataError(f"{data_format(cfg.data.format).source(cfg.data, 'train')}: the training list is empty")
    model, init = _initial_zerodce(ecfg)
    model.to(dev).train()
    spec = dict(enhancer_spec(ecfg), kind="zerodce", weights=str(ckpt_path))
    opt = torch.optim.Adam(model.parameters(), lr=ecfg.lr, weight_decay=WEIGHT_DECAY)
    ds = FrameDataset(manifest, ecfg.frames_per_clip, ecfg.crop, seed=cfg.seed)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=cfg.train.batch_size, shuffle=True, num_workers=int(cfg.train.workers), collate_fn=collate,
        generator=gen, pin_memory=dev.type == "cuda", drop_last=False,
        multiprocessing_context=worker_context() if int(cfg.train.workers) else None,  # never hangs on a full /dev/shm
    )
    history: list[dict[str, Any]] = []
    for epoch in range(ecfg.epochs):
        ds.set_epoch(epoch)
        row = _enhancer_epoch(model, opt, loader, epoch, int(cfg.train.max_steps_per_epoch or 0), dev, progress)
        history.append(row)
        log.info("enhancer epoch %d/%d: %s", epoch, ecfg.epochs - 1, " ".join(f"{k}={row[k]:.5f}" for k in _TERMS))
        save_checkpoint(ckpt_path, kind="enhancer", arch={"enhancer": spec}, config=cfg.to_dict(),
                        model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, epoch=epoch,
                        metrics=row, history=history)
        metrics = {"epochs": history, "checkpoint": str(ckpt_path), "init": init, "bad_videos": list(data.skipped)}
        atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


_TERMS = ("loss", "tv", "spa", "col", "exp")


def _initial_zerodce(ecfg: Any) -> tuple[ZeroDCE, str]:
    """``(model, init)``: the official / dlkdd weights of ``enhancer.weights`` when the file exists, else random."""
    if ecfg.weights and Path(ecfg.weights).is_file():
        log.info("fine-tuning ZeroDCE from %s", ecfg.weights)
        return ZeroDCE.from_official(ecfg.weights), str(ecfg.weights)
    log.info("training ZeroDCE from scratch (enhancer.weights %r not found)", ecfg.weights)
    return ZeroDCE(), "random"


def _enhancer_epoch(model: nn.Module, opt: torch.optim.Optimizer, loader: Any, epoch: int, max_steps: int,
                    dev: torch.device, progress: bool) -> dict[str, Any]:
    """One epoch of zero-reference training; the epoch's row (image-weighted mean of each term)."""
    sums = dict.fromkeys(_TERMS, 0.0)
    images = steps = 0
    t0 = time.time()
    total = len(loader) if not max_steps else min(max_steps, len(loader))
    bar = tqdm(loader, total=total, desc=f"enhancer epoch {epoch}", disable=not progress, dynamic_ncols=True,
               leave=False)
    for batch in bar:
        x = batch["frames"].flatten(0, 1).to(dev, non_blocking=True)  # (B*F,3,crop,crop)
        _, enhanced, r = model(x)
        losses = zero_reference_loss(x, enhanced, r)
        if not torch.isfinite(losses["loss"]):
            raise TrainingError(f"non-finite ZeroDCE loss at epoch {epoch}, step {steps}: "
                                + ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())
                                + " (lower enhancer.lr)")
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        n = x.shape[0]
        vals = {k: float(losses[k].detach()) for k in _TERMS}
        for k in _TERMS:
            sums[k] += vals[k] * n
        images += n
        steps += 1
        bar.set_postfix({k: f"{v:.4f}" for k, v in vals.items()})
        if max_steps and steps >= max_steps:
            break
    bar.close()
    return {"epoch": epoch, **{k: sums[k] / images for k in _TERMS}, "images": images, "steps": steps,
            "time_s": round(time.time() - t0, 3)}


@torch.no_grad()
def enhance_frames(enhancer: nn.Module, frames: np.ndarray, device: str | torch.device = "cpu", batch: int = 16,
                   progress: bool = True, desc: str = "enhance") -> np.ndarray:
    """Enhance uint8 RGB frames ``(T,H,W,3)`` -> uint8 ``(T,H,W,3)``, ``batch`` frames at a time
    (as ``(batch,3,H,W)`` images in [0,1]); the output is clamped to [0,1] and rounded."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T,H,W,3), got shape {frames.shape}")
    dev = torch.device(device)
    enhancer = enhancer.to(dev).eval()
    out = np.empty_like(frames, dtype=np.uint8)
    batch = max(1, int(batch))
    for s in tqdm(range(0, len(frames), batch), desc=desc, unit="batch", disable=not progress, leave=False):
        x = torch.from_numpy(np.ascontiguousarray(frames[s:s + batch])).to(dev).permute(0, 3, 1, 2).float() / 255.0
        y = enhancer(x)
        if isinstance(y, (tuple, list)):  # a bare ZeroDCE: (after_4, enhanced, r)
            y = y[1]
        out[s:s + batch] = (y.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return out


def save_preview(path: str | Path, original: np.ndarray, enhanced: np.ndarray, rows: int = 4,
                 title: str = "") -> Path:
    """A PNG of ``rows`` frames spread evenly over the video: each row ``original | enhanced``
    (uint8 ``(T,H,W,3)`` both), with frame numbers and mean brightness in the titles."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    t = len(original)
    idx = sorted(set(np.linspace(0, t - 1, num=min(rows, t)).round().astype(int).tolist()))
    h, w = original.shape[1:3]
    fig, axes = plt.subplots(len(idx), 2, figsize=(2 * 3.2, len(idx) * 3.2 * h / w + 0.4), squeeze=False)
    for r, i in enumerate(idx):
        for c, (img, name) in enumerate(((original[i], "original"), (enhanced[i], "enhanced"))):
            ax = axes[r][c]
            ax.imshow(img)
            ax.set_title(f"{name} #{i} (mean {img.mean() / 255:.3f})", fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def enhance_video(in_path: str | Path, out_path: str | Path, enhancer: nn.Module, device: str | torch.device = "cpu",
                  batch: int = 16, max_frames: int | None = None, preview: str | Path | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Decode ``in_path``, enhance every frame (or the first ``max_frames``), write ``out_path``
    (H.264 MP4, same fps) and optionally a preview PNG. Returns
    ``{"frames", "fps", "height", "width", "mean_in", "mean_out", "seconds"}``.

    A missing or undecodable video raises :class:`VideoError` naming the file. A clip with a
    display rotation (a portrait phone clip) is decoded upright (:mod:`dlkdd.data.rotation`)
    and written upright with no rotation tag, which every player shows the right way up.
    """
    t0 = time.time()
    info = probe(in_path)
    indices: Sequence[int] | None = None
    if max_frames:
        indices = list(range(min(int(max_frames), info.num_frames)))
    frames = decode(in_path, indices)
    if len(frames) == 0:
        raise VideoError(str(in_path), "no frames decoded")
    enhanced = enhance_frames(enhancer, frames, device=device, batch=batch, progress=progress,
                              desc=f"enhance {Path(in_path).name}")
    write_video(out_path, enhanced, fps=info.fps or 30.0)
    if preview:
        save_preview(preview, frames, enhanced, title=f"{Path(in_path).name}: {type(enhancer).__name__}")
    res = {
        "frames": int(len(frames)), "fps": float(info.fps or 30.0), "height": int(frames.shape[1]),
        "width": int(frames.shape[2]), "mean_in": float(frames.mean() / 255.0),
        "mean_out": float(enhanced.mean() / 255.0), "seconds": round(time.time() - t0, 3),
    }
    log.info("enhanced %s -> %s: %d frames, mean %.3f -> %.3f", in_path, out_path, res["frames"],
             res["mean_in"], res["mean_out"])
    return res
