"""``CachedViewDataset``: training clips paired with their cached teacher logits.

Sample ``i`` (epoch ``e``) replays one of the clip's V stored views, picked by
``np.random.default_rng((seed, e, i))``, so the student's input is exactly the clip the teacher
scored::

    {"video": float32 (3,T,S,S), "label": int, "key": str, "view": float64 (P,),
     "index": int, "teacher_logits": float32 (C,)}

The store is joined by key (never by index) and opened lazily in each DataLoader worker. When
the store holds the decoded clips (``cache.clips``, :mod:`dlkdd.cache.clips`), the view is read
from there as uint8 instead of being decoded from the video: the same tensor the teacher scored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlkdd.cache.clips import ClipStore, clip_store_path, dequantize
from dlkdd.cache.store import LogitStore
from dlkdd.errors import CacheError

__all__ = ["CachedViewDataset"]


class CachedViewDataset:
    def __init__(self, manifest: Any, clip_cfg: Any, store_path: str | Path, seed: int = 0):
        self.manifest = manifest
        self.clip_cfg = clip_cfg
        self.seed = int(seed)
        self.epoch = 0
        self.store = LogitStore.open(store_path, mode="r")
        try:
            self.rows = [self.store.index_of(k) for k in manifest.keys()]
        except (KeyError, CacheError) as e:
            raise CacheError(f"logit cache {store_path} lacks a training clip: {e}") from None
        self.views_per_clip = self.store.views_per_clip
        # the teacher scored stored uint8 clips: replay those (no decoding), see dlkdd.cache.clips
        self.clips_path = clip_store_path(store_path) if self.store.meta.get("clips") else None
        self._clips = ClipStore.open(self.clips_path) if self.clips_path is not None else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.manifest)

    def view_choice(self, index: int) -> int:
        from dlkdd.data.dataset import view_rng

        return int(view_rng(self.seed, self.epoch, index).integers(self.views_per_clip))

    def __getitem__(self, index: int) -> dict:
        import torch

        from dlkdd.data.views import View, load_clip

        if not 0 <= index < len(self):
            raise IndexError(index)
        e = self.manifest[index]
        logits, views = self.store.read(self.rows[index])
        v = self.view_choice(index)
        if self._clips is not None:
            video = dequantize(self._clips.read(self.rows[index], v))
        else:
            video = load_clip(e.path, View.from_array(views[v]), self.clip_cfg.size)
        return {"video": video, "label": int(e.label), "key": e.key,
                "view": torch.from_numpy(np.ascontiguousarray(views[v], dtype=np.float64)), "index": int(index),
                "teacher_logits": torch.from_numpy(np.ascontiguousarray(logits[v], dtype=np.float32))}
