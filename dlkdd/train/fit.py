"""``fit``: one training run of a stage, from its config to ``OUT/<kind>.pt``.

``fit(cfg, model, train_ds, val_ds, objective, out_dir, kind=..., arch=..., classes=...)`` builds the
loaders (:func:`dlkdd.train.distributed.build_loader`), AdamW and the schedule from ``cfg.train``,
then for each epoch: seeds the data order (and, under DDP, each rank's dropout / token masks),
trains (:func:`dlkdd.train.engine.train_one_epoch`), evaluates every ``train.eval_every`` epochs
(:func:`dlkdd.train.engine.evaluate`), logs every term (``log.csv``, ``log.json``, ``curves.png``),
saves ``last.pt`` and, when val top-1 improves, ``best.pt`` (a hard link to that epoch's
``last.pt``: no second copy on disk). At the end: ``metrics.json`` and the self-contained
``OUT/<filename>`` (default ``<kind>.pt``); the last epoch's evaluation also writes every test clip's
prediction to ``OUT/predictions.jsonl`` (:mod:`dlkdd.predictions`, read by ``dlkdd compare``).
``resume=DIR`` continues exactly (model, optimizer, scheduler, epoch, history, best metric, RNG
states): :func:`dlkdd.train.checkpoint.resume_state`.

The objective (:mod:`dlkdd.train.objectives`) may define ``extras(epoch)``: scalars logged with the
epoch (the student's ``alpha``, ``tau``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from dlkdd.data.dataset import collate
from dlkdd.errors import CheckpointError
from dlkdd.predictions import PREDICTIONS_FILE, eval_view_spec, from_logits, write_predictions
from dlkdd.train import distributed as ddp
from dlkdd.train.amp import resolve_amp
from dlkdd.train.checkpoint import (get_rng_state, remove_torn_files, resume_state, save_checkpoint,
                                    write_final)
from dlkdd.train.engine import evaluate, prepare_model, set_epoch, steps_per_epoch, train_one_epoch
from dlkdd.train.logger import EpochLogger
from dlkdd.train.optim import build_optimizer, build_scheduler
from dlkdd.train.rundir import check_resume_config, check_resume_extra, copy_checkpoint
from dlkdd.utils import atomic_link, atomic_write_json

log = logging.getLogger(__name__)

__all__ = ["fit"]


def fit(cfg: Any, model: nn.Module, train_ds: Any, val_ds: Any | None, objective: Any, out_dir: str | Path, *,
        kind: str, arch: Mapping[str, Any], classes: list[str], info: ddp.DistInfo | None = None,
        resume: str | Path | None = None, extra: Mapping[str, Any] | None = None, progress: bool = True,
        filename: str | None = None) -> dict[str, Any]:
    """Train ``model`` (already built) on ``train_ds`` as ``cfg.train`` says; see the module docstring.

    ``kind``: teacher | student | baseline | pretrain (stored in the checkpoint); ``extra``: free-form
    facts stored in every checkpoint (skipped clips, the cache used ...). Returns the final metrics.
    """
    out_dir = Path(out_dir)
    tc = cfg.train
    epochs = int(tc.epochs)
    info = info or ddp.DistInfo()
    device = info.device
    if resume is not None and not (Path(resume) / "last.pt").exists() and not Path(resume).is_file():
        raise CheckpointError(f"--resume {resume}: no last.pt there; nothing to resume (start without --resume)")

    net = prepare_model(model, device)
    model = ddp.wrap_ddp(net, info, sync_bn=bool(tc.sync_bn))  # rank 0's init on every rank
    net = ddp.unwrap(model)
    train_loader = ddp.build_loader(train_ds, info, tc.batch_size, shuffle=True, seed=cfg.seed, workers=tc.workers,
                                    drop_last=len(train_ds) > tc.batch_size * info.world_size, collate_fn=collate)
    val_loader = None
    if val_ds is not None:
        val_loader = ddp.build_loader(val_ds, info, tc.batch_size, shuffle=False, seed=cfg.seed, workers=tc.workers,
                                      even=False, collate_fn=collate)
    optimizer = build_optimizer(net, tc)
    scheduler = build_scheduler(optimizer, tc, steps_per_epoch(len(train_loader), tc.accum_steps,
                                                               tc.max_steps_per_epoch))
    static = {"kind": kind, "arch": dict(arch), "config": cfg.to_dict(), "classes": list(classes)}

    start, history, best_top1, best_epoch = 0, [], None, None
    val: dict[str, Any] | None = None
    train_m: dict[str, Any] = {}
    if resume is not None:
        st = resume_state(resume, net, optimizer, scheduler, kind=kind)
        check_resume_config(st["ckpt"], cfg, st["path"])  # only RESUME_MAY_CHANGE keys may differ
        check_resume_extra(st["ckpt"], extra, st["path"])  # the same cached teacher(s)
        start, history, best_top1, best_epoch = st["start_epoch"], st["history"], st["best_top1"], st["best_epoch"]
        done = st["ckpt"].get("metrics") or {}  # a run resumed after its last epoch still reports its metrics
        val, train_m = done.get("val"), done.get("train") or {}
    logger = EpochLogger(out_dir, history)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            remove_torn_files(out_dir)
    last_good: Path | None = (out_dir / "last.pt") if (out_dir / "last.pt").exists() else None
    amp_used = resolve_amp(tc.amp, device) if info.is_main else None  # logged; in checkpoints and metrics.json
    extras_of = getattr(objective, "extras", None)

    for epoch in range(start, epochs):
        set_epoch(train_loader, epoch, cfg.seed)
        if info.distributed:  # per-rank dropout / token masks, re-seeded per epoch (exact on resume)
            ddp.seed_rank_rng(cfg.seed, epoch, info.rank)
        extras = dict(extras_of(epoch)) if extras_of is not None else {}
        train_m = train_one_epoch(model, train_loader, optimizer, scheduler, objective, device, epoch,
                                  accum_steps=tc.accum_steps, amp=tc.amp, max_steps=tc.max_steps_per_epoch,
                                  grad_clip=tc.grad_clip or None, progress=progress, is_main=info.is_main,
                                  last_good=last_good)
        row: dict[str, Any] = {"epoch": epoch}
        row.update({f"train_{k}": v for k, v in train_m.items() if k not in ("lr", "clips", "steps", "loss_steps")})
        row["train_loss_steps"] = train_m["loss_steps"]  # per optimizer step: log.json and the curves
        row["lr"] = train_m["lr"]
        row.update(extras)
        improved = False
        if val_loader is not None and ((epoch + 1) % tc.eval_every == 0 or epoch == epochs - 1):
            last = epoch == epochs - 1  # the final weights' per-clip predictions, for `dlkdd compare`
            val = evaluate(model, val_loader, device, len(classes), amp=tc.amp, progress=progress,
                           is_main=info.is_main, predictions=last)
            if last:
                rows = val.pop("predictions")
                if info.is_main:
                    write_predictions(out_dir / PREDICTIONS_FILE, from_logits(
                        rows["keys"], rows["labels"], rows["logits"], classes,
                        {"views": eval_view_spec(cfg.clip), "top1": val["top1"], "kind": kind, "seed": cfg.seed,
                         "run": str(out_dir)}))
            row.update({"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"]})
            if best_top1 is None or val["top1"] > best_top1:
                best_top1, best_epoch, improved = val["top1"], epoch, True
        logger.append(row)
        if info.is_main:
            log.info("%s", " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                                    if k in ("epoch", "train_loss", "train_top1", "val_top1", "val_top5", "lr")
                                    or k in extras))
            save_checkpoint(out_dir / "last.pt", **static, model=net.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict() if scheduler is not None else None, epoch=epoch,
                            rng=get_rng_state(), metrics={"train": train_m, "val": val}, history=logger.history,
                            best_top1=best_top1, extra=dict(extra or {}, best_epoch=best_epoch, amp=amp_used))
            last_good = out_dir / "last.pt"
            if improved:  # the same bytes as last.pt: a hard link costs no disk (or a copy)
                atomic_link(out_dir / "last.pt", out_dir / "best.pt")
            logger.write()
        ddp.barrier()

    final = {"epochs": epochs, "best_top1": best_top1, "best_epoch": best_epoch,
             "top1": val["top1"] if val else None, "top5": val["top5"] if val else None,
             "val": val, "train": train_m, "history": logger.history, "amp": amp_used}
    # bad clips skipped under data.on_bad_clip=skip are part of the run's record
    final.update({k: v for k, v in dict(extra or {}).items() if k in ("skipped_keys", "num_skipped")})
    if info.is_main:
        if resume is not None and not (out_dir / "last.pt").exists():  # a finished run resumed into a new --out
            copy_checkpoint(st["path"], out_dir / "last.pt")
        atomic_write_json(out_dir / "metrics.json", final)
        path = write_final(out_dir, filename or f"{kind}.pt")  # the deliverable, without optimiser state
        log.info("%s checkpoint: %s (val top1 %s)", kind, path, final.get("top1"))
    ddp.barrier()
    return final
