"""Student pre-training (``dlkdd pretrain``): self-supervised on the dark clips (ActLumos stage 1,
``pretrain.task=ssl``, the default) or supervised on synthetic motion videos (``pretrain.task=motion``).

ActLumos (Suresh Dass et al.) first pre-trains the student without labels on the dark clips
only, with two views of each clip and a contrastive objective; stage 2 is the usual
``dlkdd student`` initialised from this checkpoint (``model.pretrained``) and distilled from the
ActLumos teacher's cached logits.

- data: :class:`~dlkdd.data.dataset.ClipDataset` with the :class:`~dlkdd.data.views.TwoViews`
  policy: two random training views of each dark clip from ``view_rng(seed, epoch, index)``
  (independent crops, scales and flips; start frames forced apart when the video is long enough).
- model: :class:`~dlkdd.models.pretrain_net.PretrainNet` (trunk + projection head).
- loss: :class:`~dlkdd.train.objectives.InfoNCEObjective`, ``L = info_nce(z(view1), z(view2);
  pretrain.temperature)`` (SimCLR NT-Xent, Chen et al. 2020; :func:`dlkdd.losses.info_nce`); logged
  terms ``loss``, ``pos_sim`` (mean cosine of the two views' embeddings) and ``pair_acc`` (% of the
  2B anchors whose nearest other embedding is their own second view).
- :func:`pretrain_student`: the training run (``pretrain.epochs``, ``pretrain.lr``, the rest of
  ``train.*``), no validation; writes ``OUT/pretrain.pt`` (kind ``pretrain``), ``OUT/last.pt``,
  ``OUT/log.{csv,json}`` (the loss per epoch), ``OUT/metrics.json``.

``pretrain.task=motion`` (:func:`_pretrain_motion`): the student's own classifier (R(2+1)D + head)
learns the 8 motion classes of :class:`~dlkdd.data.motion.MotionClips` with cross-entropy,
``pretrain.motion_clips`` fresh clips per epoch, validated on 256 fixed ones; ``OUT/pretrain.pt``
(kind ``pretrain``) holds the whole classifier, and ``model.pretrained`` takes its trunk.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dlkdd.data.dataset import ClipDataset
from dlkdd.data.motion import MOTIONS, MotionClips
from dlkdd.data.formats import data_format
from dlkdd.data.prepare import prepare_data
from dlkdd.data.views import TwoViews
from dlkdd.errors import DataError
from dlkdd.models.pretrain_net import PretrainNet
from dlkdd.models.build import build_student, student_arch
from dlkdd.models.backbones import backbone_spec
from dlkdd.train import distributed as ddp
from dlkdd.train.fit import FitRun, Stage, fit
from dlkdd.train.objectives import CrossEntropyObjective, InfoNCEObjective
from dlkdd.train.rundir import claim_run_dir
from dlkdd.utils import resolve_device, seed_everything

log = logging.getLogger(__name__)

__all__ = ["pretrain_arch", "pretrain_student"]


def pretrain_arch(cfg: Any) -> dict[str, Any]:
    """``arch`` of a ``pretrain.pt``: trunk, normalisation, projection size."""
    mean, std = cfg.model.norm_stats()
    return {"family": "pretrain", "backbone": cfg.model.backbone, "normalize": cfg.model.normalize,
            "mean": [float(v) for v in mean], "std": [float(v) for v in std], "proj_dim": int(cfg.pretrain.proj_dim),
            "enhancer": None}


def pretrain_student(cfg: Any, out_dir: str | Path, device: str = "auto", resume: str | Path | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Self-supervised InfoNCE pre-training of the student trunk on ``cfg``'s dark training clips.

    Runs ``pretrain.epochs`` epochs at ``pretrain.lr`` (AdamW, ``train.*`` for the rest: batch,
    schedule, workers); ``model.pretrained`` (if set) is the starting point. Returns the final
    metrics (``train``: loss, pos_sim, pair_acc of the last epoch; ``history``: every epoch).
    """
    from dlkdd.errors import DataError
    from dlkdd.models.families import family

    reason = family(cfg.model.teacher).no_video_reason
    if reason:  # InfoNCE pre-training works on video clips; a pose run's student takes keypoints
        raise DataError(f"model.teacher={cfg.model.teacher}: {reason}; self-supervised pre-training (`dlkdd "
                        f"pretrain`) is for video students: use a dlkdd or actlumos config")
    info = ddp.init_distributed(resolve_device(device))
    run_cfg = cfg.replace(**{"train.epochs": cfg.pretrain.epochs, "train.lr": cfg.pretrain.lr})
    try:
        # OUT writable and locked, no finished run replaced, the batch fits in memory: before any work
        with claim_run_dir(run_cfg, out_dir, kind="pretrain", resume=resume, is_main=info.is_main,
                           device=info.device):
            if cfg.pretrain.task == "motion":
                return _pretrain_motion(cfg, run_cfg, out_dir, info, resume, progress)
            return _pretrain(cfg, run_cfg, out_dir, info, resume, progress)
    finally:
        ddp.cleanup()


def _pretrain(cfg: Any, run_cfg: Any, out_dir: str | Path, info: Any, resume: str | Path | None,
              progress: bool) -> dict[str, Any]:
    seed_everything(cfg.seed)
    data = prepare_data(cfg, need_test=False, progress=progress and info.is_main)
    model = PretrainNet(cfg.model.backbone, *cfg.model.norm_stats(), proj_dim=cfg.pretrain.proj_dim)
    if cfg.model.pretrained:
        backbone_spec(cfg.model.backbone).load_pretrained(model.backbone, cfg.model.pretrained)
    train_ds = ClipDataset(data.train, cfg.clip, TwoViews(cfg.clip, seed=cfg.seed))
    if len(train_ds) < 2:
        where = data_format(cfg.data.format).source(cfg.data, "train")
        raise DataError(f"{where}: InfoNCE pre-training needs at least 2 training clips "
                        f"(negatives), got {len(train_ds)}")
    log.info("pretrain (InfoNCE, T=%g): %d dark clips, %d epochs, lr %g -> %s", cfg.pretrain.temperature,
             len(train_ds), cfg.pretrain.epochs, cfg.pretrain.lr, out_dir)
    stage = Stage("pretrain", pretrain_arch(cfg), data.classes,
                  extra={"skipped_keys": data.skipped, "num_skipped": len(data.skipped)})
    final = fit(run_cfg, model, train_ds, None, InfoNCEObjective(cfg.pretrain.temperature), out_dir, stage,
                FitRun(info, resume, progress))
    for row in final.get("history") or []:
        log.info("pretrain epoch %s: loss %.4f pos_sim %.3f pair_acc %.1f%%", row.get("epoch"),
                 row.get("train_loss", float("nan")), row.get("train_pos_sim", float("nan")),
                 row.get("train_pair_acc", float("nan")))
    return final


def _pretrain_motion(cfg: Any, run_cfg: Any, out_dir: str | Path, info: Any, resume: str | Path | None,
                     progress: bool) -> dict[str, Any]:
    """Supervised pre-training on synthetic motion clips (no real data read)."""
    seed_everything(cfg.seed)
    model = build_student(cfg, len(MOTIONS))
    train_ds = MotionClips(cfg.pretrain.motion_clips, cfg.clip, seed=cfg.seed)
    val_ds = MotionClips(256, cfg.clip, seed=cfg.seed + 1_000_003, fixed=True)
    log.info("pretrain (synthetic motion, %d classes): %d new clips per epoch, %d epochs, lr %g -> %s",
             len(MOTIONS), len(train_ds), cfg.pretrain.epochs, cfg.pretrain.lr, out_dir)
    arch = dict(student_arch(cfg, len(MOTIONS)), family="pretrain", task="motion")
    final = fit(run_cfg, model, train_ds, val_ds, CrossEntropyObjective(), out_dir,
                Stage("pretrain", arch, list(MOTIONS)), FitRun(info, resume, progress))
    log.info("motion pre-training: train top-1 %.1f%%, held-out synthetic top-1 %s%%",
             (final.get("train") or {}).get("top1", float("nan")), final.get("top1"))
    return final
