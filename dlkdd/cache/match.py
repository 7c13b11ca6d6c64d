"""Refuse a logit store that was not built for this student's data (README.md "The workflow", docs/INTERNALS.md "Cache").

Before a student trains with distillation, :func:`check_store_matches` compares the store's
metadata with the training manifest and the config, and raises one :class:`CacheError`
naming *every* difference and the command that builds the right cache. Checked:

- completeness (``complete`` flag and every ``done`` row);
- class names (same names, same order -> same logit columns);
- manifest sha256 (same ordered ``key<TAB>label`` lines and classes) and the keys themselves;
- the view spec: views per clip, the clip spec (frames, stride, size, resize, min_scale,
  max_scale, flip) and the view seed - the same fields that name the store (see keying.py);
- the teacher checkpoint sha256, when given.

``manifest`` is duck-typed: ``.keys()``, ``.classes``, ``.sha256()``
(:class:`dlkdd.data.manifest.Manifest`). ``cfg`` is a :class:`dlkdd.config.Config`.
"""
from __future__ import annotations

import os
from typing import Any

from dlkdd.cache.keying import CLIP_SPEC_KEYS, clip_spec, view_spec_from_config
from dlkdd.cache.store import LogitStore
from dlkdd.errors import CacheError
from dlkdd.hints import config_args

__all__ = ["store_differences", "check_store_matches", "rebuild_command"]


def rebuild_command(config_path: str | None = None, teacher_path: str | None = None) -> str:
    """The ``dlkdd cache-logits`` command for this run, with the user's own ``--config``/``--set``
    options (:func:`dlkdd.hints.config_args`), so it can be pasted as is."""
    return f"dlkdd cache-logits {config_args(config_path)} --teacher {teacher_path or '<ckpt>'}"


def _short(x: Any) -> str:
    return str(x)[:12] if x else "none"


def store_differences(store: LogitStore, manifest: Any, cfg: Any, teacher_sha256: str | None = None,
                      views: int | None = None) -> list[str]:
    """The list of differences between ``store`` and (manifest, cfg, teacher); [] if it matches."""
    m = store.meta
    diffs: list[str] = []

    done = store.done
    if not (m.get("complete", False) and done.all()):
        diffs.append(f"the store is incomplete ({int(done.sum())}/{done.size} clips done, "
                     f"complete flag {'set' if m.get('complete') else 'unset'})")

    s_classes = m.get("classes")
    m_classes = list(manifest.classes)
    if s_classes is None or list(s_classes) != m_classes:
        diffs.append(f"classes differ: store {s_classes} vs data {m_classes}")
    elif store.num_classes != len(m_classes):
        diffs.append(f"class count differs: store logits have {store.num_classes}, data has {len(m_classes)}")

    m_sha = manifest.sha256()
    if m.get("manifest_sha256") != m_sha:
        diffs.append(f"manifest sha256 differs: store {_short(m.get('manifest_sha256'))} vs data {_short(m_sha)}")
    m_keys = [str(k) for k in manifest.keys()]
    s_keys = store.keys
    if m_keys != s_keys:
        s_set, m_set = set(s_keys), set(m_keys)
        missing = [k for k in m_keys if k not in s_set]
        extra = [k for k in s_keys if k not in m_set]
        if missing or extra:
            diffs.append(f"keys differ: {len(missing)} training clip(s) not in the store {missing[:3]}, "
                         f"{len(extra)} store key(s) not in the data {extra[:3]}")
        else:
            diffs.append("keys are in another order than the manifest")

    want = view_spec_from_config(cfg, views)
    if int(m.get("views_per_clip", -1)) != want["views_per_clip"] or store.views_per_clip != want["views_per_clip"]:
        diffs.append(f"views per clip differ: store {m.get('views_per_clip')} vs config {want['views_per_clip']} "
                     f"(cache.views)")
    s_clip = m.get("clip")
    if not isinstance(s_clip, dict):
        diffs.append("the store records no clip spec")
    else:
        try:
            got = clip_spec(s_clip)
        except (KeyError, TypeError, ValueError):
            got = {}
        for k in (*CLIP_SPEC_KEYS, "stride_jitter"):
            if got.get(k, 0) != want["clip"].get(k, 0):
                diffs.append(f"clip.{k} differs: store {s_clip.get(k, 0)!r} vs config {want['clip'].get(k, 0)!r}")
    if m.get("view_seed") != want["view_seed"]:
        diffs.append(f"view seed differs: store {m.get('view_seed')!r} vs config {want['view_seed']!r} (cache.seed)")

    if teacher_sha256 is not None and m.get("teacher_sha256") != teacher_sha256:
        diffs.append(f"teacher differs: store built from checkpoint {_short(m.get('teacher_sha256'))}, "
                     f"given teacher is {_short(teacher_sha256)}")
    return diffs


def check_store_matches(store: LogitStore | str | os.PathLike, manifest: Any, cfg: Any,
                        teacher_sha256: str | None = None, views: int | None = None,
                        config_path: str | None = None, teacher_path: str | None = None) -> None:
    """Raise :class:`CacheError` unless ``store`` was built for exactly this data and view spec.

    ``store``: an open :class:`LogitStore` or a path. ``views`` overrides ``cfg.cache.views``.
    ``config_path``/``teacher_path`` only fill in the rebuild command of the message.
    """
    own = not isinstance(store, LogitStore)
    s = LogitStore.open(store) if own else store
    try:
        diffs = store_differences(s, manifest, cfg, teacher_sha256, views)
        teacher_path = teacher_path or (s.meta.get("teacher_path") if diffs else None)
    finally:
        if own:
            s.close()
    if diffs:
        raise CacheError(f"logit cache {s.path} does not match this run: " + "; ".join(diffs)
                         + f". Build the right cache with `{rebuild_command(config_path, teacher_path)}`")

