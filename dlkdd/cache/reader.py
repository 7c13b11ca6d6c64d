"""``StoreRows``: a logit store joined to a training manifest by key, for the student's data.

``StoreRows(manifest, store_path).read(i) -> (logits float32 (V,C), views float64 (V,P))`` of the
manifest's ``i``-th clip, whatever its row in the store (joined by key, never by index). The store
is opened lazily in each DataLoader worker. :class:`dlkdd.data.views.StoredView` picks one of the
V views per sample and epoch and hands its logits to the sample as ``teacher_logits``.

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

__all__ = ["StoreRows"]


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

    def read_clip(self, index: int, view: int) -> Any:
        """View ``view`` of the manifest's clip ``index`` as the teacher scored it, float32 ``(3,T,S,S)``."""
        return dequantize(self.clips.read(self.rows[index], view))
