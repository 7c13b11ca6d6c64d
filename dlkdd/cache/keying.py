"""Where a logit store lives: a name derived from what identifies it.

A store is identified by (teacher checkpoint, training manifest, view spec) (README.md
"The workflow", "Logit cache"). Its default file name is

    t<first 12 hex of teacher sha256>-m<first 12 hex of manifest sha256>-v<8 hex of view-spec hash>.zarr

(``.h5`` for HDF5), so two experiments with the same teacher, data and views find and share
the same store under ``cache.dir``. The **view spec** is everything that decides which views
are drawn and what the teacher saw: ``views_per_clip``, the clip spec (frames, stride, size,
resize, min_scale, max_scale, flip) and the view seed. Its hash is the sha256 of its canonical
JSON (sorted keys, no spaces), so it does not depend on dict order.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from dlkdd.cache.backends import FORMAT_SUFFIX, normalize_fmt
from dlkdd.errors import CacheError

__all__ = ["CLIP_SPEC_KEYS", "FORMAT_SUFFIX", "normalize_fmt", "clip_spec", "view_spec_from_config",
           "view_spec_hash", "store_name", "default_store_path"]

# clip-config fields that define how views are drawn (see dlkdd.config.ClipConfig)
CLIP_SPEC_KEYS = ("frames", "stride", "size", "resize", "min_scale", "max_scale", "flip")


def clip_spec(clip: Any) -> dict[str, Any]:
    """The clip spec as a plain JSON dict, from a ``ClipConfig`` or a mapping."""
    get = clip.get if isinstance(clip, Mapping) else lambda k: getattr(clip, k)
    out: dict[str, Any] = {}
    for k in CLIP_SPEC_KEYS:
        v = get(k)
        if k in ("min_scale", "max_scale"):
            v = float(v)
        elif k == "flip":
            v = bool(v)
        else:
            v = int(v)
        out[k] = v
    # temporal jitter changes the drawn views; recorded only when on, so specs (and store names) made
    # before it existed are unchanged
    j = clip.get("stride_jitter", 0) if isinstance(clip, Mapping) else getattr(clip, "stride_jitter", 0)
    if int(j or 0):
        out["stride_jitter"] = int(j)
    return out


def view_spec_from_config(cfg: Any, views: int | None = None) -> dict[str, Any]:
    """``{"views_per_clip", "clip", "view_seed"}`` from a :class:`dlkdd.config.Config`.

    ``views`` overrides ``cfg.cache.views`` (e.g. ``cache-logits --views K``).
    """
    return {
        "views_per_clip": int(views if views is not None else cfg.cache.views),
        "clip": clip_spec(cfg.clip),
        "view_seed": int(cfg.cache.seed),
    }


def view_spec_hash(view_spec: Mapping[str, Any]) -> str:
    """Full sha256 hex of the canonical JSON of a view spec (only its three defining keys)."""
    try:
        spec = {
            "views_per_clip": int(view_spec["views_per_clip"]),
            "clip": clip_spec(view_spec["clip"]),
            "view_seed": int(view_spec["view_seed"]),
        }
    except KeyError as e:
        raise CacheError(f"view spec lacks {e.args[0]!r}; it needs views_per_clip, clip and view_seed") from None
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _hex(sha: str, what: str) -> str:
    s = str(sha).lower()
    if len(s) < 12 or any(c not in "0123456789abcdef" for c in s):
        raise CacheError(f"{what} must be a sha256 hex digest, got {sha!r}")
    return s


def store_name(teacher_sha256: str, manifest_sha256: str, view_spec: Mapping[str, Any], fmt: str = "zarr") -> str:
    """``t<12hex>-m<12hex>-v<8hex>.zarr`` (or ``.h5``)."""
    t = _hex(teacher_sha256, "teacher_sha256")[:12]
    m = _hex(manifest_sha256, "manifest_sha256")[:12]
    v = view_spec_hash(view_spec)[:8]
    return f"t{t}-m{m}-v{v}{FORMAT_SUFFIX[normalize_fmt(fmt)]}"


def default_store_path(cache_dir: str | os.PathLike, teacher_sha256: str, manifest_sha256: str,
                       view_spec: Mapping[str, Any], fmt: str = "zarr") -> Path:
    """``cache_dir / store_name(...)``."""
    return Path(cache_dir) / store_name(teacher_sha256, manifest_sha256, view_spec, fmt)
