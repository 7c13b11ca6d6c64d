"""``fit``: one training run of a stage, from its config to ``OUT/<kind>.pt``.

``fit(cfg, model, train_ds, val_ds, objective, out_dir, stage, run)`` (``stage``: a :class:`Stage`, what the
run trains and records; ``run``: a :class:`FitRun`, rank, resume, progress) builds the
loaders (:func:`dlkdd.train.distributed.build_loader`), AdamW and the schedule from ``cfg.train``,
then for each epoch: seeds the data order (and, under DDP, each rank's dropout / token masks),
trains (:func:`dlkdd.train.engine.train_one_epoch`), evaluates every ``train.eval_every`` epochs
(:func:`dlkdd.train.engine.evaluate`), logs every term (``log.csv``, ``log.json``, ``curves.png``),
saves ``last.pt`` and, when val top-1 improves, ``best.pt`` (a hard link to that epoch's
``last.pt``: no second copy on disk). At the end: ``metrics.json`` and the self-contained
``OUT/<stage.filename>`` (default ``<kind>.pt``); the last epoch's evaluation also writes every test clip's
prediction to ``OUT/predictions.jsonl`` (:mod:`dlkdd.predictions`, read by ``dlkdd compare``).
``FitRun(resume=DIR)`` continues exactly (model, optimizer, scheduler, epoch, history, best metric, RNG
states): :func:`dlkdd.train.checkpoint.resume_state`.

The objective (:mod:`dlkdd.train.objectives`) may define ``extras(epoch)``: scalars logged with the
epoch (the student's ``alpha``, ``tau``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn

from dlkdd.data.dataset import collate
from dlkdd.errors import CheckpointError
from dlkdd.predictions import PREDICTIONS_FILE, eval_view_spec, from_logits, write_predictions
from dlkdd.train import distributed as ddp
from dlkdd.train.amp import resolve_amp
from dlkdd.train.checkpoint import (get_rng_state, remove_torn_files, resume_state, save_checkpoint,
                                    write_final)
from dlkdd.train.engine import EpochRun, evaluate, prepare_model, set_epoch, steps_per_epoch, train_one_epoch
from dlkdd.train.logger import EpochLogger
from dlkdd.train.optim import build_optimizer, build_scheduler
from dlkdd.train.rundir import check_resume_config, check_resume_extra, copy_finished_run
from dlkdd.utils import atomic_link, atomic_write_json, fmt_pct

log = logging.getLogger(__name__)

__all__ = ["Stage", "FitRun", "fit"]


@dataclass(frozen=True)
class Stage:
    """What a run trains and records: ``kind`` (teacher | student | baseline | pretrain, stored in the
    checkpoint), ``arch``, ``classes``, ``extra`` (free-form facts stored in every checkpoint: skipped
    clips, the cache used ...) and ``filename`` of the final checkpoint (default ``<kind>.pt``)."""

    kind: str
    arch: Mapping[str, Any]
    classes: Sequence[str]
    extra: Mapping[str, Any] = field(default_factory=dict)
    filename: str | None = None


@dataclass(frozen=True)
class FitRun:
    """How this process runs: ``info`` (DDP rank and device; default one CPU process), ``resume`` (a run
    directory or checkpoint to continue), ``progress`` (bars)."""

    info: ddp.DistInfo | None = None
    resume: str | Path | None = None
    progress: bool = True


def fit(cfg: Any, model: nn.Module, train_ds: Any, val_ds: Any | None, objective: Any, out_dir: str | Path,
        stage: Stage, run: FitRun = FitRun()) -> dict[str, Any]:
    """Train ``model`` (already built) on ``train_ds`` as ``cfg.train`` says; see the module docstring.
    Returns the final metrics."""
    out_dir = Path(out_dir)
    resume = run.resume
    if resume is not None and not (Path(resume) / "last.pt").exists() and not Path(resume).is_file():
        raise CheckpointError(f"--resume {resume}: no last.pt there; nothing to resume (start without --resume)")
    f = _Fit(cfg, model, train_ds, val_ds, objective, out_dir, stage, run)
    for epoch in range(f.start, f.epochs):
        f.epoch(epoch)
    return f.finish()


class _Fit:
    """The state of one :func:`fit`: loaders, optimiser, schedule, history, best epoch."""

    def __init__(self, cfg: Any, model: nn.Module, train_ds: Any, val_ds: Any | None, objective: Any,
                 out_dir: Path, stage: Stage, run: FitRun):
        tc = cfg.train
        self.cfg, self.tc, self.objective, self.out_dir, self.stage, self.run = cfg, tc, objective, out_dir, stage, run
        self.info = info = run.info or ddp.DistInfo()
        self.epochs = int(tc.epochs)
        net = prepare_model(model, info.device)
        self.model = ddp.wrap_ddp(net, info, sync_bn=bool(tc.sync_bn))  # rank 0's init on every rank
        self.net = ddp.unwrap(self.model)
        self.train_loader = ddp.build_loader(train_ds, info, tc, shuffle=True, seed=cfg.seed, collate_fn=collate,
                                             drop_last=len(train_ds) > tc.batch_size * info.world_size)
        self.val_loader = None if val_ds is None else ddp.build_loader(
            val_ds, info, tc, shuffle=False, seed=cfg.seed, even=False, collate_fn=collate)
        self.optimizer = build_optimizer(self.net, tc)
        self.scheduler = build_scheduler(self.optimizer, tc, steps_per_epoch(len(self.train_loader), tc.accum_steps,
                                                                             tc.max_steps_per_epoch))
        self.static = {"kind": stage.kind, "arch": dict(stage.arch), "config": cfg.to_dict(),
                       "classes": list(stage.classes)}
        self.start, history, self.best_top1, self.best_epoch = 0, [], None, None
        self.val: dict[str, Any] | None = None
        self.train_m: dict[str, Any] = {}
        self.resumed: dict[str, Any] | None = None
        if run.resume is not None:
            history = self._resume()
        self.logger = EpochLogger(out_dir, history)
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            if run.resume is not None:
                remove_torn_files(out_dir)
        self.last_good: Path | None = (out_dir / "last.pt") if (out_dir / "last.pt").exists() else None
        self.amp_used = resolve_amp(tc.amp, info.device) if info.is_main else None  # in checkpoints, metrics.json
        self.extras_of = getattr(objective, "extras", None)

    def _resume(self) -> list:
        st = resume_state(self.run.resume, self.net, self.optimizer, self.scheduler, kind=self.stage.kind)
        check_resume_config(st["ckpt"], self.cfg, st["path"])  # only RESUME_MAY_CHANGE keys may differ
        check_resume_extra(st["ckpt"], self.stage.extra, st["path"])  # the same cached teacher(s)
        self.start, self.best_top1, self.best_epoch = st["start_epoch"], st["best_top1"], st["best_epoch"]
        done = st["ckpt"].get("metrics") or {}  # a run resumed after its last epoch still reports its metrics
        self.val, self.train_m = done.get("val"), done.get("train") or {}
        self.resumed = st
        return st["history"]

    def epoch(self, epoch: int) -> None:
        """Train, evaluate when due, log, checkpoint."""
        info, tc = self.info, self.tc
        set_epoch(self.train_loader, epoch, self.cfg.seed)
        if info.distributed:  # per-rank dropout / token masks, re-seeded per epoch (exact on resume)
            ddp.seed_rank_rng(self.cfg.seed, epoch, info.rank)
        extras = dict(self.extras_of(epoch)) if self.extras_of is not None else {}
        self.train_m = train_one_epoch(self.model, self.train_loader, self.objective, self.optimizer, self.scheduler,
                                       epoch, tc, EpochRun(info.device, info.is_main, self.run.progress,
                                                           self.last_good))
        row: dict[str, Any] = {"epoch": epoch}
        row.update({f"train_{k}": v for k, v in self.train_m.items()
                    if k not in ("lr", "clips", "steps", "loss_steps")})
        row["train_loss_steps"] = self.train_m["loss_steps"]  # per optimizer step: log.json and the curves
        row["lr"] = self.train_m["lr"]
        row.update(extras)
        improved = False
        if self.val_loader is not None and ((epoch + 1) % tc.eval_every == 0 or epoch == self.epochs - 1):
            improved = self._validate(epoch, row)
        self.logger.append(row)
        if info.is_main:
            log.info("%s", " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                                    if k in ("epoch", "train_loss", "train_top1", "val_top1", "val_top5", "lr")
                                    or k in extras))
            self._save(epoch, improved)
        ddp.barrier()

    def _validate(self, epoch: int, row: dict[str, Any]) -> bool:
        """Evaluate into ``row``; the last epoch also writes every test clip's prediction. True if top-1 improved."""
        last = epoch == self.epochs - 1  # the final weights' per-clip predictions, for `dlkdd compare`
        self.val = val = evaluate(self.model, self.val_loader, self.info.device, len(self.stage.classes),
                                  amp=self.tc.amp, progress=self.run.progress, is_main=self.info.is_main,
                                  predictions=last)
        if last:
            rows = val.pop("predictions")
            if self.info.is_main:
                write_predictions(self.out_dir / PREDICTIONS_FILE, from_logits(
                    rows["keys"], rows["labels"], rows["logits"], list(self.stage.classes),
                    {"views": eval_view_spec(self.cfg.clip), "top1": val["top1"], "kind": self.stage.kind,
                     "seed": self.cfg.seed, "run": str(self.out_dir)}))
        row.update({"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"]})
        if self.best_top1 is None or val["top1"] > self.best_top1:
            self.best_top1, self.best_epoch = val["top1"], epoch
            return True
        return False

    def _save(self, epoch: int, improved: bool) -> None:
        last = self.out_dir / "last.pt"
        train_state = getattr(self.net, "train_state_dict", None)  # trains beside the model, saved apart from it
        save_checkpoint(last, **self.static, model=self.net.state_dict(), optimizer=self.optimizer.state_dict(),
                        train_state=train_state() if train_state is not None else None,
                        scheduler=self.scheduler.state_dict() if self.scheduler is not None else None, epoch=epoch,
                        rng=get_rng_state(), metrics={"train": self.train_m, "val": self.val},
                        history=self.logger.history, best_top1=self.best_top1,
                        extra=dict(self.stage.extra or {}, best_epoch=self.best_epoch, amp=self.amp_used))
        self.last_good = last
        if improved:  # the same bytes as last.pt: a hard link costs no disk (or a copy)
            atomic_link(last, self.out_dir / "best.pt")
        self.logger.write()

    def finish(self) -> dict[str, Any]:
        """``metrics.json`` and the final ``OUT/<filename>``; returns the final metrics."""
        val = self.val
        final = {"epochs": self.epochs, "best_top1": self.best_top1, "best_epoch": self.best_epoch,
                 "top1": val["top1"] if val else None, "top5": val["top5"] if val else None,
                 "val": val, "train": self.train_m, "history": self.logger.history, "amp": self.amp_used}
        # bad clips skipped under data.on_bad_clip=skip are part of the run's record
        final.update({k: v for k, v in dict(self.stage.extra or {}).items() if k in ("skipped_keys", "num_skipped")})
        if self.info.is_main:
            if self.resumed is not None and self.start >= self.epochs:  # a finished run, maybe into a new --out
                copy_finished_run(self.resumed["path"], self.out_dir)  # its last.pt and predictions
            atomic_write_json(self.out_dir / "metrics.json", final)
            path = write_final(self.out_dir, self.stage.filename or f"{self.stage.kind}.pt")  # no optimiser state
            log.info("%s checkpoint: %s (val top-1 %s)", self.stage.kind, path, fmt_pct(final.get("top1")))
        ddp.barrier()
        return final
