"""What the training commands share: data with the bad-clip policy, loaders, one training run.

``prepare_data(cfg)`` reads the train/test manifests, scans every clip of both splits (missing,
unreadable, empty, non-video, audio-only, truncated and corrupt files) and applies
``data.on_bad_clip`` (``error``: stop before the first step listing every bad clip of both
splits; ``skip``: drop them, warn, and report the skipped keys - recorded in the run's
``metrics.json`` and checkpoints). A bad test clip is caught here too, not after an epoch. ``run_training`` builds loaders, AdamW and the
schedule, runs :func:`dlkdd.train.engine.fit` (resumable) and writes the self-contained final
checkpoint ``OUT/<kind>.pt`` plus ``OUT/metrics.json``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from dlkdd.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["PreparedData", "find_bad_clips", "prepare_data", "run_training"]


@dataclass
class PreparedData:
    train: Any  # Manifest (bad clips removed under on_bad_clip=skip)
    test: Any | None
    skipped: list[str] = field(default_factory=list)  # training keys dropped (on_bad_clip=skip)
    skipped_test: list[str] = field(default_factory=list)  # test keys dropped (on_bad_clip=skip)

    @property
    def classes(self) -> list[str]:
        return list(self.train.classes)


def find_bad_clips(manifest: Any, progress: bool = True) -> list[tuple[str, str, str]]:
    """``[(key, path, reason)]`` for every clip of ``manifest`` that does not fully decode."""
    from dlkdd.data.check import scan_clips

    return [(manifest[i].key, manifest[i].path, reason) for i, reason in scan_clips(manifest, progress, decode=True)]


def prepare_data(cfg: Any, need_test: bool = True, progress: bool = True, scan: bool = True) -> PreparedData:
    """Manifests of ``cfg.data`` with the bad-clip policy applied to both splits.

    A missing video is a bad clip like an undecodable one (listed with its list line), so one
    error lists every problem, and ``skip`` can drop it. ``scan=False`` leaves the training split
    as listed (the caller drops what it knows to be bad, e.g. a logit store's ``skipped_keys``);
    the test split is always scanned, so a bad test clip never stops training after an epoch.
    """
    from dlkdd.data.manifest import manifest_from_config

    train = manifest_from_config(cfg.data, "train", check_files=False)
    test = manifest_from_config(cfg.data, "test", check_files=False) if need_test and cfg.data.test_list else None
    skipped: list[str] = []
    skipped_test: list[str] = []
    bad = find_bad_clips(train, progress=progress) if scan else []
    bad_test = find_bad_clips(test, progress=progress) if test is not None else []
    if bad or bad_test:
        src = {e.key: e.source for m in (train, test) if m is not None for e in m.entries}

        def at(key: str) -> str:
            return f" (listed at {src[key]})" if src.get(key) else ""

        listing = "\n".join([f"  {path}: {reason}{at(k)}" for k, path, reason in bad]
                            + [f"  [test] {path}: {reason}{at(k)}" for k, path, reason in bad_test])
        if cfg.data.on_bad_clip == "error":
            where = cfg.data.train_list + (f" and {cfg.data.test_list}" if bad_test else "")
            raise DataError(f"{len(bad)} bad training clip(s)"
                            + (f" and {len(bad_test)} bad test clip(s)" if bad_test else "")
                            + f" in {where}:\n{listing}\n"
                            "Fix or remove them, or train without them with --set data.on_bad_clip=skip")
        skipped = [k for k, _, _ in bad]
        skipped_test = [k for k, _, _ in bad_test]
        log.warning("skipping %d bad training and %d bad test clip(s) (data.on_bad_clip=skip):\n%s",
                    len(skipped), len(skipped_test), listing)
        train = train.without(skipped)
        if test is not None:
            test = test.without(skipped_test)
        if len(train) == 0:
            raise DataError(f"no training clip of {cfg.data.train_list} decodes; nothing to train on")
    if test is not None and list(test.classes) != list(train.classes):
        raise DataError(f"the test list {cfg.data.test_list} has other classes than the training list")
    return PreparedData(train, test, skipped, skipped_test)


def run_training(cfg: Any, model: Any, train_ds: Any, val_ds: Any | None, objective: Callable, *, kind: str,
                 arch: Mapping[str, Any], classes: list[str], out_dir: str | Path, info: Any,
                 resume: str | Path | None = None, extra: Mapping[str, Any] | None = None,
                 epoch_extras: Callable[[int], Mapping[str, Any]] | None = None, progress: bool = True,
                 lr: float | None = None, filename: str | None = None) -> dict[str, Any]:
    """Train ``model`` (already built) and write ``OUT/{last,best}.pt``, logs, ``OUT/<filename>``.

    ``kind``: teacher | student | baseline | pretrain (stored in the checkpoint); ``filename``
    (default ``<kind>.pt``): the final self-contained checkpoint. Returns the final metrics dict.
    """
    from dlkdd.data.dataset import collate
    from dlkdd.train import distributed as ddp
    from dlkdd.train.checkpoint import load_checkpoint, save_checkpoint
    from dlkdd.train.engine import fit, prepare_model, steps_per_epoch
    from dlkdd.train.optim import build_optimizer, build_scheduler

    out_dir = Path(out_dir)
    tc = cfg.train
    epochs = int(tc.epochs)
    model = prepare_model(model, info.device)
    model = ddp.wrap_ddp(model, info, sync_bn=bool(getattr(tc, "sync_bn", False)))  # rank 0's init on every rank
    if info.distributed:  # per-rank dropout / token masks, re-seeded per epoch (exact on resume)
        epoch_extras = ddp.rank_seeded(info, cfg.seed, epoch_extras)
    train_loader = ddp.build_loader(train_ds, info, tc.batch_size, shuffle=True, seed=cfg.seed, workers=tc.workers,
                                    drop_last=len(train_ds) > tc.batch_size * info.world_size, collate_fn=collate)
    val_loader = None
    if val_ds is not None:
        val_loader = ddp.build_loader(val_ds, info, tc.batch_size, shuffle=False, seed=cfg.seed, workers=tc.workers,
                                      even=False, collate_fn=collate)
    optimizer = build_optimizer(ddp.unwrap(model), tc, lr=lr)
    spe = steps_per_epoch(len(train_loader), tc.accum_steps, tc.max_steps_per_epoch)
    scheduler = build_scheduler(optimizer, tc, spe)
    from dlkdd import __version__

    fields = {"kind": kind, "arch": dict(arch), "config": cfg.to_dict(), "classes": list(classes),
              "extra": dict(extra or {}), "dlkdd_version": __version__}
    if resume is not None and not (Path(resume) / "last.pt").exists() and not Path(resume).is_file():
        from dlkdd.errors import CheckpointError

        raise CheckpointError(f"--resume {resume}: no last.pt there; nothing to resume (start without --resume)")
    final = fit(model, train_loader, val_loader, optimizer, scheduler, objective, out_dir, epochs, info.device,
                len(classes), ckpt_fields=fields, resume=resume, seed=cfg.seed, eval_every=tc.eval_every,
                accum_steps=tc.accum_steps, amp=tc.amp, max_steps=tc.max_steps_per_epoch,
                epoch_extras=epoch_extras, info=info, progress=progress)
    if val_loader is not None:  # the final weights' per-clip test predictions, for `dlkdd compare`
        from dlkdd.predictions import write_run_predictions

        write_run_predictions(model, val_loader, info.device, classes, cfg.clip, out_dir, amp=tc.amp,
                              is_main=info.is_main, meta={"kind": kind, "seed": cfg.seed, "run": str(out_dir)})
    if info.is_main:
        # the deliverable: the final weights, self-contained, without optimiser state
        last = load_checkpoint(out_dir / "last.pt")
        for k in ("optimizer", "scheduler", "rng"):
            last[k] = None
        final_path = out_dir / (filename or f"{kind}.pt")
        save_checkpoint(final_path, **last)
        log.info("%s checkpoint: %s (val top1 %s)", kind, final_path, final.get("top1"))
        # bad clips skipped under data.on_bad_clip=skip are part of the run's record
        skipped_info = {k: v for k, v in dict(extra or {}).items()
                        if k in ("skipped_keys", "num_skipped")}
        if skipped_info:
            from dlkdd.utils import atomic_write_json

            final.update(skipped_info)
            atomic_write_json(out_dir / "metrics.json", final)
    ddp.barrier()
    return final

