"""``dlkdd teacher``: train the teacher (frozen enhancer -> R(2+1)D-BERT) with cross-entropy
on enhanced clips (DL-KDD stage 1), or the ActLumos teacher with CE + SupCon.

In: a :class:`dlkdd.config.Config`. Out: ``OUT/teacher.pt`` (self-contained: the enhancer's
weights are inside), ``OUT/metrics.json``, ``OUT/log.{csv,json}``, ``OUT/curves.png``,
``OUT/{last,best}.pt`` (resumable with ``--resume OUT``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["train_teacher"]


def train_teacher(cfg: Any, out_dir: str | Path, device: str = "auto", resume: str | Path | None = None,
                  progress: bool = True) -> dict[str, Any]:
    from dlkdd.data.dataset import VideoDataset
    from dlkdd.models.build import build_teacher, teacher_arch
    from dlkdd.runs import prepare_data, run_training
    from dlkdd.train import distributed as ddp
    from dlkdd.train.objectives import CrossEntropyObjective, SupConObjective
    from dlkdd.utils import resolve_device, seed_everything

    info = ddp.init_distributed(resolve_device(device))
    try:
        seed_everything(cfg.seed)
        data = prepare_data(cfg, progress=progress and info.is_main)
        n = len(data.classes)
        model = build_teacher(cfg, n)
        if cfg.model.teacher == "actlumos":
            objective = SupConObjective(cfg.actlumos.supcon_weight, cfg.actlumos.supcon_temperature)
        else:
            objective = CrossEntropyObjective()
        train_ds = VideoDataset(data.train, cfg.clip, train=True, seed=cfg.seed)
        val_ds = VideoDataset(data.test, cfg.clip, train=False) if data.test is not None else None
        log.info("teacher (%s, enhancer %s): %d training clips, %d classes -> %s", cfg.model.teacher,
                 cfg.enhancer.kind, len(train_ds), n, out_dir)
        return run_training(cfg, model, train_ds, val_ds, objective, kind="teacher", arch=teacher_arch(cfg, n),
                            classes=data.classes, out_dir=out_dir, info=info, resume=resume,
                            extra={"skipped_keys": data.skipped, "num_skipped": len(data.skipped)},
                            progress=progress)
    finally:
        ddp.cleanup()
