"""``StoreRows``: a logit store joined to a training manifest by key, for the student's data.

``StoreRows(manifest, store_path).read_fields(i)`` -> ``{"views": float64 (V,P), "teacher_logits":
float32 (V,C), "teacher_<name>": (V, ...)}``: every per-view field of the manifest's ``i``-th clip, whatever
its row in the store (joined by key, never by index), named for the sample by :func:`sample_field`
(``features`` -> ``teacher_features``). ``read(i) -> (logits, views)`` is the two-field form.
:class:`dlkdd.data.views.StoredView` picks one of the V views per sample and epoch and hands every
field of that view to the sample.

Each DataLoader worker opens the store once (on its first read, after the fork) and reads one row
per sample: a Zarr store's rows are inner chunks of its shards, read by their bytes
(:mod:`dlkdd.cache.rowfile`), never a whole shard.

When the store was built with ``cache.clips`` (:mod:`dlkdd.cache.clips`), the uint8 clips the teacher
scored are stored beside it: ``read_clip(i, v)`` returns view ``v`` of clip ``i`` as float32
``(3,T,S,S)`` and the student never decodes a video.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlkdd.cache.clips import ClipStore, clip_store_path, dequantize
from dlkdd.cache.store import LogitStore
from dlkdd.errors import CacheError

__all__ = ["StoreRows", "sample_field"]


def sample_field(name: str) -> str:
    """The sample key of a store field: ``views`` stays ``views``, any other ``x`` is ``teacher_x``."""
    return name if name == "views" else f"teacher_{name}"


class StoreRows:
    target_field = "teacher_logits"

    def __init__(self, manifest: Any, store_path: str | Path):
        self.path = Path(store_path)
        self.store = LogitStore.open(store_path, mode="r")
        try:
            self.rows = [self.store.index_of(k) for k in manifest.keys()]
        except (KeyError, CacheError) as e:
            raise CacheError(f"logit cache {store_path} lacks a training clip: {e}") from None
        self.views_per_clip = self.store.views_per_clip
        # the teacher scored stored uint8 clips: replay those (no decoding)
        self.clips = ClipStore.open(clip_store_path(store_path)) if self.store.meta.get("clips") else None

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.store.read(self.rows[index])

    def read_fields(self, index: int) -> dict[str, np.ndarray]:
        """Every per-view field of the manifest's clip ``index``, ``{sample_field(name): (V, ...)}``."""
        return {sample_field(n): a[0] for n, a in self.store.read_fields([self.rows[index]]).items()}

    def read_clip(self, index: int, view: int) -> Any:
        """View ``view`` of the manifest's clip ``index`` as the teacher scored it, float32 ``(3,T,S,S)``."""
        return dequantize(self.clips.read(self.rows[index], view))
