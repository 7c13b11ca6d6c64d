"""``dlkdd student``: train the student on the original dark clips from cached soft targets.

``L = CE(y, z_s) + alpha_t * KL(softmax(z_t/tau) || softmax(z_s/tau))``, ``alpha_t = alpha_0 gamma^epoch``
(DL-KDD, Chang, Chen & Tseng; paper defaults alpha_0 = 1.5, gamma = 0.95, tau = 5). The teacher
logits come only from the cache: this module never builds or loads the teacher.

- data: :class:`~dlkdd.data.dataset.ClipDataset` with the :class:`~dlkdd.data.views.StoredView`
  policy: each sample replays one of its clip's stored views (so the student sees exactly the clip
  the teacher scored) with the teacher's logits for that view (:class:`dlkdd.cache.reader.StoreRows`
  joins the store to the manifest by key). Several caches (``--cache A --cache B``): the sample
  carries ``teacher_probs``, the (weighted) mean of the teachers' softmax(z/tau) on that view
  (:class:`dlkdd.cache.ensemble.EnsembleRows`).
- model: the ``build_student`` of ``model.teacher``'s family (:data:`dlkdd.models.families.FAMILIES`;
  DL-KDD and ActLumos: R(2+1)D-BERT, no enhancer); input: the family's ``dataset``.
- loss: the family's ``objective(cfg, "student")``: :func:`dlkdd.train.objectives.build_objective` from
  ``cfg.kd`` (terms ``task_loss`` CE and ``kd_loss`` KL, pure functions of :mod:`dlkdd.losses`). With
  ``kd.feature_weight > 0`` also ``feature_loss`` against the store's teacher features: the student is
  trained as a :class:`~dlkdd.models.projector.ProjectedStudent` (a learned linear projection of its
  pooled feature onto the teacher's; checkpoints hold the student alone). One cache only; a store
  without features is refused.

``no_kd=True`` trains the same network with CE alone (the paper's "backbone only" row) on fresh
random views (:class:`~dlkdd.data.views.RandomView`).

Out: ``OUT/student.pt`` (kind ``student`` or ``baseline``), ``OUT/metrics.json``, logs, curves.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlkdd.cache.ensemble import EnsembleRows, EnsembleStore, ensemble_stats
from dlkdd.cache.inspect import soft_targets_of
from dlkdd.cache.match import check_store_matches
from dlkdd.cache.reader import StoreRows
from dlkdd.cache.store import LogitStore
from dlkdd.data.views import CenterView, RandomView, StoredView
from dlkdd.errors import CacheError
from dlkdd.models.families import family, family_of_arch
from dlkdd.models.projector import FeatureProjector, ProjectedStudent
from dlkdd.train import distributed as ddp
from dlkdd.train.fit import FitRun, Stage, fit
from dlkdd.train.rundir import claim_run_dir
from dlkdd.utils import resolve_device, seed_everything

log = logging.getLogger(__name__)

__all__ = ["Targets", "train_student", "soft_target_warnings"]

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


@dataclass(frozen=True)
class Targets:
    """Where the student's soft targets come from: ``caches`` (one store, or several for an ensemble with
    ``weights``), or none (``no_kd``: the CE baseline); ``config_path`` names the config in mismatch errors.
    What ``dlkdd student`` passes to :func:`train_student` as ``cache``."""

    caches: tuple = ()
    weights: list | None = None
    no_kd: bool = False
    config_path: str | None = None


def train_student(cfg: Any, out_dir: str | Path, cache: str | Path | list | Targets | None = None,
                  no_kd: bool = False, device: str = "auto", resume: str | Path | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """``cache``: one store path, several (a list: the soft target is the mean of the teachers'
    softmax(z/tau), :mod:`dlkdd.cache.ensemble`), or a :class:`Targets` (ensemble weights, the config's
    path for error messages); ``no_kd``: the CE baseline without a cache."""
    if isinstance(cache, Targets):
        targets = Targets(cache.caches, cache.weights, cache.no_kd or no_kd, cache.config_path)
    else:
        targets = Targets(tuple([cache] if isinstance(cache, (str, Path)) else list(cache or [])), no_kd=no_kd)
    if not targets.no_kd and not targets.caches:
        raise CacheError("the student needs --cache PATH (a store from `dlkdd cache-logits`), or --no-kd for the "
                         "baseline without distillation")
    info = ddp.init_distributed(resolve_device(device))
    try:
        # OUT writable and locked, no finished run replaced, the batch fits in memory: before any work
        with claim_run_dir(cfg, out_dir, kind="baseline" if targets.no_kd else "student", resume=resume,
                           filename="student.pt", is_main=info.is_main, device=info.device):
            return _train_student(cfg, out_dir, info, targets, resume, progress)
    finally:
        ddp.cleanup()


def _train_student(cfg: Any, out_dir: str | Path, info: Any, targets: Targets, resume: str | Path | None,
                   progress: bool) -> dict[str, Any]:
    seed_everything(cfg.seed)
    fam = family(cfg.model.teacher)
    kind = "baseline" if targets.no_kd else "student"
    data, policy, extra = _student_data(cfg, targets, info, progress)
    train_ds = fam.dataset(cfg, data.train, policy, kind)
    objective = fam.objective(cfg, kind)
    extra.update(skipped_keys=data.skipped, num_skipped=len(data.skipped))
    n = len(data.classes)
    model = fam.build_student(cfg, n)
    if kind == "student" and cfg.kd.feature_weight > 0:  # the feature term's projector trains beside it
        model = _with_projector(model, fam.student_arch(cfg, n), extra["teacher_feature_dim"])
    val_ds = fam.dataset(cfg, data.test, CenterView(cfg.clip), kind) if data.test is not None else None
    log.info("%s: %d training clips, %d classes%s -> %s", kind, len(train_ds), n,
             "" if targets.no_kd else f", alpha {cfg.kd.alpha} gamma {cfg.kd.gamma} tau {cfg.kd.tau}", out_dir)
    stage = Stage(kind, fam.student_arch(cfg, n), data.classes, extra=extra, filename="student.pt")
    return fit(cfg, model, train_ds, val_ds, objective, out_dir, stage, FitRun(info, resume, progress))


def _with_projector(student: Any, arch: dict[str, Any], teacher_dim: int) -> ProjectedStudent:
    """The student with a :class:`FeatureProjector` from its pooled feature onto the stored teacher feature
    (trained with it, never saved: :class:`ProjectedStudent`)."""
    dim = family_of_arch(arch).feature_dim(arch)
    log.info("feature term: the student's %d-d pooled feature is projected onto the teacher's stored %d-d one",
             dim, teacher_dim)
    return ProjectedStudent(student, FeatureProjector(dim, teacher_dim))


def _student_data(cfg: Any, targets: Targets, info: Any, progress: bool) -> tuple[Any, Any, dict[str, Any]]:
    """``(prepared data, training view policy, extra for the run record)``: fresh random views for the
    baseline, the stored views with their soft targets otherwise."""
    if targets.no_kd:
        data = family(cfg.model.teacher).prepare_data(cfg, progress=progress and info.is_main)
        return data, RandomView(cfg.clip, seed=cfg.seed), {}
    if len(targets.caches) > 1:  # several cached teachers: one ensemble soft target
        if cfg.kd.feature_weight > 0:
            raise CacheError("the feature term (kd.feature_weight > 0) distils one cached teacher's features; "
                             "with several --cache set kd.feature_weight=0")
        data, rows, extra = _ensemble_rows(cfg, list(targets.caches), targets.weights, progress and info.is_main,
                                           info.is_main, targets.config_path)
        return data, StoredView(rows, seed=cfg.seed), extra
    return _one_cache(cfg, targets.caches[0], info, progress, targets.config_path)


def _one_cache(cfg: Any, cache: Any, info: Any, progress: bool, config_path: str | None
               ) -> tuple[Any, Any, dict[str, Any]]:
    """:func:`_student_data` for one cached teacher: the store must match the data; its skipped clips are dropped."""
    store = LogitStore.open(cache)
    if cfg.kd.feature_weight > 0 and not store.feature_dim:  # before any decoding
        store.close()
        raise CacheError(f"{cache}: holds no teacher features, which the feature term (kd.feature_weight "
                         f"{cfg.kd.feature_weight:g}) needs: re-run dlkdd cache-logits with --features (or "
                         f"cache.features: true), or set kd.feature_weight=0")
    # the cache was built on the clips that decoded: the same skipped keys apply here
    skipped = list(store.meta.get("skipped_keys") or [])
    data = family(cfg.model.teacher).prepare_data(cfg, progress=progress and info.is_main, scan=not skipped)
    if skipped:
        data.train = data.train.without(skipped)
        data.skipped = skipped
    # the student replays the views the store holds: cache.views is for building a store
    check_store_matches(store, data.train, cfg, views=store.views_per_clip, config_path=config_path)
    extra: dict[str, Any] = {}
    if info.is_main:
        extra["soft_targets"] = _report_soft_targets(store, data.train, cfg.kd.tau)
    extra["cache"] = str(cache)
    extra["teacher_sha256"] = store.meta.get("teacher_sha256")
    if cfg.kd.feature_weight > 0:
        extra["teacher_feature_dim"] = store.feature_dim
    store.close()
    return data, StoredView(StoreRows(data.train, cache), seed=cfg.seed), extra


def _ensemble_rows(cfg: Any, caches: list, weights: list | None, progress: bool, is_main: bool,
                   config_path: str | None) -> tuple[Any, EnsembleRows, dict[str, Any]]:
    """``(prepared data, rows for StoredView, extra for the run record)`` for a student of several
    cached teachers. Every cache must match the data (:func:`dlkdd.cache.match.check_store_matches`)
    and the others (:class:`dlkdd.cache.ensemble.EnsembleStore`); clips a cache skipped as bad are
    dropped, and the caches must agree on them."""
    with EnsembleStore(caches, weights) as ens:
        skipped = [sorted(s.meta.get("skipped_keys") or []) for s in ens.stores]
        if any(sk != skipped[0] for sk in skipped):
            raise CacheError("the logit caches skipped different bad clips: " + "; ".join(
                f"{p}: {sk[:3]}" for p, sk in zip(ens.paths, skipped)))
        teacher_shas = [s.meta.get("teacher_sha256") for s in ens.stores]
        w = ens.weights.tolist()
    data = family(cfg.model.teacher).prepare_data(cfg, progress=progress, scan=not skipped[0])
    if skipped[0]:
        data.train = data.train.without(skipped[0])
        data.skipped = list(skipped[0])
    for c in caches:  # each replays the views it holds (EnsembleStore checks they agree)
        with LogitStore.open(c) as s:
            check_store_matches(s, data.train, cfg, views=s.views_per_clip, config_path=config_path)
    extra: dict[str, Any] = {"cache": [str(c) for c in caches], "teacher_sha256": teacher_shas, "cache_weights": w}
    if is_main:
        st = ensemble_stats(caches, data.train, taus=(cfg.kd.tau,), weights=weights)
        t = st["taus"][0]
        log.info("ensemble of %d cached teachers (weights %s): top-1 %.1f%% on the stored views (each: %s); at tau %g "
                 "top prob %.2f, true-class prob %.2f, entropy %.0f%% of uniform", len(caches),
                 ", ".join(f"{x:.2f}" for x in w), st["view_top1"],
                 ", ".join(f"{s['view_top1']:.1f}%" for s in st["teachers"]), cfg.kd.tau, t["top_prob"],
                 t["true_prob"], 100 * t["entropy_ratio"])
        extra["soft_targets"] = {k: v for k, v in st.items() if k != "teachers"}
    return data, EnsembleRows(data.train, caches, cfg.kd.tau, weights), extra
