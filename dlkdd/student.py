"""``dlkdd student``: train the student on the original dark clips from cached soft targets.

``L = CE(y, z_s) + alpha_t * KL(softmax(z_t/tau) || softmax(z_s/tau))``, ``alpha_t = alpha_0 gamma^epoch``
(DL-KDD, Chang, Chen & Tseng; paper defaults alpha_0 = 1.5, gamma = 0.95, tau = 5). The teacher
logits come only from the cache (:class:`dlkdd.cache.dataset.CachedViewDataset`; several caches:
the mean of the teachers' softmax(z/tau), :mod:`dlkdd.cache.ensemble`): this module never builds or
loads the teacher. ``no_kd=True`` trains the same network with CE alone (the
paper's "backbone only" row) on fresh random views.

Out: ``OUT/student.pt`` (kind ``student`` or ``baseline``), ``OUT/metrics.json``, logs, curves.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["train_student", "soft_target_warnings"]

# soft targets are flagged as weak when the teacher is right on fewer than this share of the stored
# training views, or when softmax(z/tau) is this close to uniform (entropy / log C)
WEAK_TEACHER_TOP1 = 50.0
FLAT_ENTROPY_RATIO = 0.95
_STATS_SAMPLE = 4096  # clips read for the report (all of them for smaller training sets)


def soft_target_warnings(stats: dict[str, Any]) -> list[str]:
    """Plain-language warnings for the output of :func:`dlkdd.cache.inspect.soft_target_stats`
    (first temperature in ``stats["taus"]``): a teacher that is wrong on most of the views the
    student replays, and targets so flat that the KL term is little more than label smoothing."""
    out = []
    if stats["view_top1"] < WEAK_TEACHER_TOP1:
        out.append(f"the teacher is right on only {stats['view_top1']:.1f}% of the stored training views: most "
                   f"soft targets favour a wrong class, so distillation can pull the student below the --no-kd "
                   f"baseline; a better-trained teacher (more epochs, pretrained weights) is the fix")
    t = stats["taus"][0]
    if t["entropy_ratio"] > FLAT_ENTROPY_RATIO:
        out.append(f"at tau {t['tau']:g} the soft targets are nearly uniform (entropy {100 * t['entropy_ratio']:.0f}% "
                   f"of log C, top probability {t['top_prob']:.2f}): the KL term carries little information; "
                   f"a lower --tau sharpens them")
    return out


def _report_soft_targets(store: Any, train: Any, tau: float) -> dict[str, Any]:
    """Log how informative the open store's soft targets are for this training list; return the numbers."""
    import numpy as np

    from dlkdd.cache.inspect import soft_targets_of

    sample = train
    if len(train) > _STATS_SAMPLE:
        sample = train.subset(np.linspace(0, len(train) - 1, _STATS_SAMPLE).round().astype(int).tolist())
    stats = soft_targets_of(store, sample, taus=(tau,))
    t = stats["taus"][0]
    log.info("soft targets (%d clips x %d views): teacher top-1 %.1f%% on the stored views; at tau %g top prob "
             "%.2f, true-class prob %.2f, entropy %.0f%% of uniform", stats["clips"], stats["views"],
             stats["view_top1"], tau, t["top_prob"], t["true_prob"], 100 * t["entropy_ratio"])
    for w in soft_target_warnings(stats):
        log.warning("soft targets: %s", w)
    return {k: v for k, v in stats.items() if k != "path"}


def train_student(cfg: Any, out_dir: str | Path, cache: str | Path | list | None = None, no_kd: bool = False,
                  device: str = "auto", resume: str | Path | None = None, progress: bool = True,
                  config_path: str | None = None, cache_weights: list | None = None) -> dict[str, Any]:
    """``cache``: one store path, or several (a list): then the soft target is the (``cache_weights``-)
    weighted mean of the teachers' softmax(z/tau) (:mod:`dlkdd.cache.ensemble`)."""
    from dlkdd.data.dataset import VideoDataset
    from dlkdd.models.build import build_student, student_arch
    from dlkdd.runs import prepare_data, run_training
    from dlkdd.train import distributed as ddp
    from dlkdd.train.objectives import CrossEntropyObjective, DistillationObjective
    from dlkdd.utils import resolve_device, seed_everything

    caches = [cache] if isinstance(cache, (str, Path)) else list(cache or [])
    cache = caches[0] if len(caches) == 1 else None
    if not no_kd and not caches:
        from dlkdd.errors import CacheError

        raise CacheError("the student needs --cache PATH (a store from `dlkdd cache-logits`), or --no-kd for the "
                         "baseline without distillation")
    info = ddp.init_distributed(resolve_device(device))
    try:
        seed_everything(cfg.seed)
        extra: dict[str, Any] = {}
        if no_kd:
            data = prepare_data(cfg, progress=progress and info.is_main)
            train_ds = VideoDataset(data.train, cfg.clip, train=True, seed=cfg.seed)
            objective = CrossEntropyObjective()
            epoch_extras = None
            kind = "baseline"
        elif len(caches) > 1:  # several cached teachers: one ensemble soft target
            from dlkdd.cache.ensemble import ensemble_training_set

            data, train_ds, ens_extra = ensemble_training_set(cfg, caches, cache_weights, progress, info.is_main,
                                                              config_path)
            extra.update(ens_extra)
            objective = DistillationObjective(cfg.kd.alpha, cfg.kd.gamma, cfg.kd.tau, cfg.kd.tau2_scale)
            epoch_extras = objective.extras
            kind = "student"
        else:
            from dlkdd.cache.dataset import CachedViewDataset
            from dlkdd.cache.match import check_store_matches
            from dlkdd.cache.store import LogitStore

            store = LogitStore.open(cache)
            # the cache was built on the clips that decoded: the same skipped keys apply here
            skipped = list(store.meta.get("skipped_keys") or [])
            data = prepare_data(cfg, progress=progress and info.is_main, scan=not skipped)
            if skipped:
                data.train = data.train.without(skipped)
                data.skipped = skipped
            check_store_matches(store, data.train, cfg, config_path=config_path)
            teacher_sha = store.meta.get("teacher_sha256")
            if info.is_main:
                extra["soft_targets"] = _report_soft_targets(store, data.train, cfg.kd.tau)
            store.close()
            train_ds = CachedViewDataset(data.train, cfg.clip, cache, seed=cfg.seed)
            objective = DistillationObjective(cfg.kd.alpha, cfg.kd.gamma, cfg.kd.tau, cfg.kd.tau2_scale)
            epoch_extras = objective.extras
            kind = "student"
            extra["cache"] = str(cache)
            extra["teacher_sha256"] = teacher_sha
        extra.update(skipped_keys=data.skipped, num_skipped=len(data.skipped))
        n = len(data.classes)
        model = build_student(cfg, n)
        val_ds = VideoDataset(data.test, cfg.clip, train=False) if data.test is not None else None
        log.info("%s: %d training clips, %d classes%s -> %s", kind, len(train_ds), n,
                 "" if no_kd else f", alpha {cfg.kd.alpha} gamma {cfg.kd.gamma} tau {cfg.kd.tau}", out_dir)
        final = run_training(cfg, model, train_ds, val_ds, objective, kind=kind, arch=student_arch(cfg, n),
                             classes=data.classes, out_dir=out_dir, info=info, resume=resume, extra=extra,
                             epoch_extras=epoch_extras, progress=progress, filename="student.pt")
        return final
    finally:
        ddp.cleanup()
