"""Distillation from several cached teachers: one soft target from T logit stores.

The ensemble soft target of a clip view is the (weighted) mean of the teachers' tempered softmax
(Hinton et al. 2015, sec. 2, "an ensemble of models ... the arithmetic mean of their predicted
distributions" as the soft target)::

    p_ens^tau = sum_i w_i softmax(z_i / tau) / sum_i w_i          z_i: teacher i's logits (C,)

* :func:`ensemble_soft_target` - the pure function, numpy or torch: ``(T, ..., C)`` -> ``(..., C)``.
* :class:`EnsembleStore` - opens T :class:`~dlkdd.cache.store.LogitStore` and refuses stores that
  do not hold the same keys, classes, views per clip and stored views (the student replays one
  stored view, which every teacher must have scored), naming what differs; serves per-clip
  ``read(i) -> (logits (T,V,C) float32, views (V,P) float64)`` and ``target(i, tau) -> (V,C)``.
  Rows are joined by key (stores may order their keys differently).
* :class:`EnsembleRows` - the stores joined to a training manifest by key, for the
  :class:`dlkdd.data.views.StoredView` policy (same view choice per (seed, epoch, index) as with one
  cache); each sample then carries ``"teacher_probs"`` float32 ``(C,)`` = the ensemble target at the
  training ``tau``, for :class:`dlkdd.train.objectives.DistillationObjective`.
* :func:`ensemble_stats` - ``dlkdd cache stats A B ...``: each store's and the ensemble's
  accuracy on the stored views and the target's sharpness per temperature.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlkdd.cache.store import LogitStore
from dlkdd.errors import CacheError

log = logging.getLogger(__name__)

__all__ = ["ensemble_soft_target", "normalize_weights", "EnsembleStore", "EnsembleRows", "ensemble_stats",
           "format_ensemble_stats"]


def normalize_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Teacher weights ``(T,)`` summing to 1 (None: equal weights); each must be >= 0, their sum > 0."""
    if weights is None or len(weights) == 0:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{len(w)} teacher weights for {n} caches (give one per --cache)")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"teacher weights must be finite, >= 0 and not all 0, got {list(weights)}")
    return w / w.sum()


def ensemble_soft_target(logits: Any, tau: float, weights: Sequence[float] | None = None) -> Any:
    """``sum_i w_i softmax(z_i / tau) / sum_i w_i`` over the first axis (teachers).

    ``logits``: ``(T, ..., C)`` numpy array or torch tensor; returns ``(..., C)`` probabilities of
    the same kind (torch: float32 on the input's device; numpy: float64).
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    T = logits.shape[0]
    w = normalize_weights(weights, T)
    if hasattr(logits, "detach"):
        import torch

        p = torch.softmax(logits.detach().float() / tau, dim=-1)
        wt = torch.as_tensor(w, dtype=torch.float32, device=p.device).reshape((T,) + (1,) * (p.dim() - 1))
        return (wt * p).sum(0)
    z = np.asarray(logits, dtype=np.float64) / tau
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    return np.tensordot(w, p, axes=(0, 0))


class EnsembleStore:
    """Several logit stores of the same clips and stored views, read together (see the module docstring)."""

    def __init__(self, paths: Sequence[str | os.PathLike], weights: Sequence[float] | None = None):
        if len(paths) < 1:
            raise CacheError("an ensemble needs at least one logit cache")
        self.paths = [Path(p) for p in paths]
        self.weights = normalize_weights(weights, len(self.paths))
        self.stores = [LogitStore.open(p) for p in self.paths]
        try:
            self._check()
        except Exception:
            self.close()
            raise

    def _name(self, i: int) -> str:
        return f"cache {i + 1} ({self.paths[i]})"

    def _check(self) -> None:
        ref = self.stores[0]
        self.keys = list(ref.keys)
        for i, s in enumerate(self.stores):
            for j in range(i):
                o = self.stores[j]
                sha = s.meta.get("teacher_sha256")
                if os.path.samefile(s.path, o.path) or (sha is not None and sha == o.meta.get("teacher_sha256")):
                    raise CacheError(f"{self._name(j)} and {self._name(i)} hold the same teacher "
                                     f"({str(sha)[:12] if sha else 'the same store'}): an ensemble needs different "
                                     f"teachers; pass each cache once")
        for i, s in enumerate(self.stores[1:], 1):
            a, b = self._name(0), self._name(i)
            if list(s.meta.get("classes") or []) != list(ref.meta.get("classes") or []):
                raise CacheError(f"{a} and {b} have different classes: {ref.meta.get('classes')} vs "
                                 f"{s.meta.get('classes')}")
            if set(s.keys) != set(self.keys):
                only_a = sorted(set(self.keys) - set(s.keys))
                only_b = sorted(set(s.keys) - set(self.keys))
                raise CacheError(f"{a} and {b} hold different clips: {len(only_a)} only in the first {only_a[:3]}, "
                                 f"{len(only_b)} only in the second {only_b[:3]}; build every teacher's cache with "
                                 f"the same config (training list)")
            if s.views_per_clip != ref.views_per_clip:
                raise CacheError(f"{a} and {b} store {ref.views_per_clip} vs {s.views_per_clip} views per clip "
                                 f"(cache.views): build both with the same --views")
            for k in ("clip", "view_seed"):
                if s.meta.get(k) != ref.meta.get(k):
                    raise CacheError(f"{a} and {b} were built with another {k}: {ref.meta.get(k)} vs {s.meta.get(k)}")
        self._rows = [np.array([s.index_of(k) for k in self.keys], dtype=np.int64) for s in self.stores]
        _, ref_views = ref.read_all()
        for i, s in enumerate(self.stores[1:], 1):
            _, v = s.read_all()
            v = v[self._rows[i]]
            bad = np.flatnonzero(~np.all(np.isclose(v, ref_views, rtol=0, atol=1e-9), axis=(1, 2)))
            if len(bad):
                j = int(bad[0])
                vi = int(np.flatnonzero(~np.all(np.isclose(v[j], ref_views[j], rtol=0, atol=1e-9), axis=1))[0])
                raise CacheError(f"{self._name(0)} and {self._name(i)} stored other views for {len(bad)} clip(s) "
                                 f"(first: {self.keys[j]}, view {vi}: {ref_views[j, vi].tolist()} vs "
                                 f"{v[j, vi].tolist()}); the student replays one view that every teacher must have "
                                 f"scored: build the caches with the same cache.seed and clip settings")
        self._index = {k: i for i, k in enumerate(self.keys)}

    # -- the LogitStore-like reading interface
    @property
    def meta(self) -> dict[str, Any]:
        return self.stores[0].meta

    @property
    def num_teachers(self) -> int:
        return len(self.stores)

    @property
    def views_per_clip(self) -> int:
        return self.stores[0].views_per_clip

    @property
    def num_classes(self) -> int:
        return self.stores[0].num_classes

    def index_of(self, key: str) -> int:
        try:
            return self._index[key]
        except KeyError:
            raise CacheError(f"clip {key!r} is not in the logit caches {', '.join(map(str, self.paths))}") from None

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(logits (T,V,C) float32, views (V,P) float64)`` of ensemble row ``i`` (the first store's order)."""
        zs = []
        views = None
        for s, rows in zip(self.stores, self._rows):
            z, v = s.read(int(rows[i]))
            zs.append(z)
            views = v if views is None else views
        return np.stack(zs).astype(np.float32), views

    def read_many(self, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(logits (T,B,V,C) float32, views (B,V,P))``."""
        idx = np.asarray(idx, dtype=np.int64)
        zs = [s.read_many(rows[idx])[0] for s, rows in zip(self.stores, self._rows)]
        return np.stack(zs).astype(np.float32), self.stores[0].read_many(self._rows[0][idx])[1]

    def target(self, i: int, tau: float) -> np.ndarray:
        """The ensemble soft target ``(V, C)`` of every stored view of row ``i``."""
        return ensemble_soft_target(self.read(i)[0], tau, self.weights)

    def close(self) -> None:
        for s in self.stores:
            s.close()

    def __enter__(self) -> "EnsembleStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EnsembleRows:
    """Several stores joined to a training manifest by key, for :class:`dlkdd.data.views.StoredView`.

    ``read(i) -> (targets float32 (V,C), views float64 (V,P))``: the ensemble soft target at ``tau`` of
    every stored view of the manifest's clip ``i``; ``target_field = "teacher_probs"`` (the sample
    field the distillation objective reads as a target already at tau).
    """

    target_field = "teacher_probs"

    def __init__(self, manifest: Any, store_paths: Sequence[str | os.PathLike], tau: float,
                 weights: Sequence[float] | None = None):
        self.tau = float(tau)
        self.store = EnsembleStore(store_paths, weights)
        try:
            self.rows = [self.store.index_of(k) for k in manifest.keys()]
        except CacheError as e:
            raise CacheError(f"the logit caches lack a training clip: {e}") from None
        self.views_per_clip = self.store.views_per_clip

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        logits, views = self.store.read(self.rows[index])
        target = ensemble_soft_target(logits, self.tau, self.store.weights)
        return np.ascontiguousarray(target, dtype=np.float32), views

    def read_fields(self, index: int) -> dict[str, np.ndarray]:
        """``{"teacher_probs": (V,C), "views": (V,P)}``: an ensemble passes its soft target, not each
        teacher's other fields (they need not agree in size)."""
        target, views = self.read(index)
        return {self.target_field: target, "views": views}


def ensemble_stats(paths: Sequence[str | os.PathLike], manifest: Any, taus: Sequence[float] = (1.0, 5.0),
                   weights: Sequence[float] | None = None) -> dict[str, Any]:
    """Per store (:func:`dlkdd.cache.inspect.soft_targets_of`) and for the ensemble target, on the stored views.

    Ensemble: ``view_top1`` = % of stored views whose ``argmax p_ens^1`` is the label, ``clip_top1``
    the same with each clip's views' targets averaged; per ``tau`` the ensemble target's mean top
    probability, true-class probability and entropy / log C.
    """
    from dlkdd.cache.inspect import soft_targets_of

    with EnsembleStore(paths, weights) as ens:
        per = [soft_targets_of(s, manifest, taus) for s in ens.stores]
        rows = np.array([ens.index_of(k) for k in manifest.keys()], dtype=np.int64)
        z, _ = ens.read_many(rows)  # (T, N, V, C)
        y = np.asarray(manifest.labels(), dtype=np.int64)
        T, n, v, c = z.shape
        p1 = ensemble_soft_target(z, 1.0, ens.weights)  # (N, V, C)
        out = {"caches": [str(p) for p in ens.paths], "weights": ens.weights.tolist(), "clips": n, "views": v,
               "classes": c, "view_top1": float((p1.argmax(-1) == y[:, None]).mean() * 100),
               "clip_top1": float((p1.mean(1).argmax(-1) == y).mean() * 100), "taus": [], "teachers": per}
        for tau in taus:
            p = ensemble_soft_target(z, float(tau), ens.weights)
            ent = -(p * np.log(np.clip(p, 1e-300, None))).sum(-1)
            out["taus"].append({"tau": float(tau), "top_prob": float(p.max(-1).mean()),
                                "true_prob": float(np.take_along_axis(p, y[:, None, None].repeat(v, 1), -1).mean()),
                                "entropy_ratio": float(ent.mean() / np.log(c)) if c > 1 else 0.0})
    return out


def format_ensemble_stats(st: dict[str, Any], split: str = "train") -> list[str]:
    """Readable lines of :func:`ensemble_stats` (``dlkdd cache stats A B ...``)."""
    out = [f"{len(st['caches'])} caches: {st['clips']} clips x {st['views']} views, {st['classes']} classes "
           f"({split} labels)"]
    for t, w in zip(st["teachers"], st["weights"]):
        out.append(f"  {t['path']}: weight {w:.2f}, top-1 on the stored views {t['view_top1']:.1f}% "
                   f"(views averaged: {t['clip_top1']:.1f}%)")
    out.append(f"ensemble (weighted mean softmax): top-1 on the stored views {st['view_top1']:.1f}%  "
               f"(views averaged per clip: {st['clip_top1']:.1f}%)")
    out.append(f"{'tau':>6} {'top prob':>9} {'true-class prob':>16} {'entropy / log C':>16}   (ensemble target)")
    for r in st["taus"]:
        out.append(f"{r['tau']:>6g} {r['top_prob']:>9.3f} {r['true_prob']:>16.3f} {r['entropy_ratio']:>16.3f}")
    return out
