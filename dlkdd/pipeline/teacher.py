"""``dlkdd teacher``: train the teacher of the family ``model.teacher`` names
(:data:`dlkdd.models.families.FAMILIES`): DL-KDD's frozen enhancer -> R(2+1)D-BERT with
cross-entropy on enhanced clips (stage 1), or another family's teacher with its own objective.

- data: the family's lists (:meth:`~dlkdd.models.family.Family.prepare_data`) and dataset
  (:meth:`~dlkdd.models.family.Family.dataset`; DL-KDD: decoded clips; pose: windows of pose stores),
  random training views (:class:`~dlkdd.data.views.RandomView`), centred validation views
  (:class:`~dlkdd.data.views.CenterView`).
- model: the family's ``build_teacher``; loss: its ``objective(cfg, "teacher")``
  (DL-KDD: :class:`~dlkdd.train.objectives.CrossEntropyObjective`).

In: a :class:`dlkdd.config.Config`. Out: ``OUT/teacher.pt`` (self-contained: the enhancer's
weights are inside), ``OUT/metrics.json``, ``OUT/log.{csv,json}``, ``OUT/curves.png``,
``OUT/{last,best}.pt`` (resumable with ``--resume OUT``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dlkdd.data.views import CenterView, RandomView
from dlkdd.models.families import family
from dlkdd.train import distributed as ddp
from dlkdd.train.fit import FitRun, Stage, fit
from dlkdd.train.rundir import claim_run_dir
from dlkdd.utils import resolve_device, seed_everything

log = logging.getLogger(__name__)

__all__ = ["train_teacher"]


def train_teacher(cfg: Any, out_dir: str | Path, device: str = "auto", resume: str | Path | None = None,
                  progress: bool = True) -> dict[str, Any]:
    info = ddp.init_distributed(resolve_device(device))
    try:
        # OUT writable and locked, no finished run replaced, the batch fits in memory: before any work
        with claim_run_dir(cfg, out_dir, kind="teacher", resume=resume, is_main=info.is_main, device=info.device):
            return _train_teacher(cfg, out_dir, info, resume, progress)
    finally:
        ddp.cleanup()


def _train_teacher(cfg: Any, out_dir: str | Path, info: Any, resume: str | Path | None,
                   progress: bool) -> dict[str, Any]:
    seed_everything(cfg.seed)
    fam = family(cfg.model.teacher)
    data = fam.prepare_data(cfg, progress=progress and info.is_main)
    n = len(data.classes)
    model = fam.build_teacher(cfg, n)
    objective = fam.objective(cfg, "teacher")
    train_ds = fam.dataset(cfg, data.train, RandomView(cfg.clip, seed=cfg.seed), "teacher")
    val_ds = fam.dataset(cfg, data.test, CenterView(cfg.clip), "teacher") if data.test is not None else None
    log.info("teacher (%s, enhancer %s): %d training clips, %d classes -> %s", cfg.model.teacher,
             cfg.enhancer.kind, len(train_ds), n, out_dir)
    stage = Stage("teacher", fam.teacher_arch(cfg, n), data.classes,
                  extra={"skipped_keys": data.skipped, "num_skipped": len(data.skipped)})
    return fit(cfg, model, train_ds, val_ds, objective, out_dir, stage, FitRun(info, resume, progress))
