"""The datasets: :class:`ClipDataset` (one manifest, one view policy) and :class:`FrameDataset`.

``ClipDataset(manifest, clip_cfg, policy)[i]`` decodes video ``i`` once, cuts the views the
policy (:mod:`dlkdd.data.views`: ``RandomView``, ``CenterView``, ``StoredView``, ``CacheViews``,
``TwoViews``, ``EvalGrid``) picks for it at the current epoch, and returns a dict::

    layout "one":   {"video": float32 (3,T,S,S) in [0,1], "view": float64 (P,),   ...}
    layout "pair":  {"video": (3,T,S,S), "video2": (3,T,S,S), "view": (2,P),      ...}
    layout "stack": {"video": (V,3,T,S,S), "view": (V,P),                         ...}
    always:         {"label": int, "key": str, "index": int} + the policy's extra fields
                    (StoredView: "teacher_logits" float32 (C,))

Training policies (``policy.augments``: RandomView, StoredView, TwoViews) also get the photometric
jitter of ``clip.jitter`` (:mod:`dlkdd.data.augment`; off at 0, the default).

Call :meth:`ClipDataset.set_epoch` before each epoch (with non-persistent workers, the default,
workers copy the dataset when iteration starts, so the new epoch reaches them). Every view is
a function of (seed, epoch, index) or (seed, key), never of the worker that loads it.

``FrameDataset`` serves zero-reference enhancer training: ``frames_per_clip`` random frames of
one video with one random ``crop x crop`` box, float32 ``(F,3,crop,crop)``.

:func:`collate` batches: tensors stacked, keys kept as a list of str.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dlkdd.data.augment import jitter_rng, photometric_jitter
from dlkdd.data.manifest import Manifest
from dlkdd.data.video import decode, probe
from dlkdd.data.views import cut_views

log = logging.getLogger(__name__)

__all__ = ["ClipDataset", "FrameDataset", "collate"]


class ClipDataset:
    """Clips of the videos of ``manifest`` cut as ``clip_cfg`` says, views chosen by ``policy``."""

    def __init__(self, manifest: Manifest, clip_cfg: Any, policy: Any):
        self.manifest = manifest
        self.clip_cfg = clip_cfg
        self.policy = policy
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        e = self.manifest[index]
        replay = getattr(self.policy, "replay", None)
        stored = replay(index, self.epoch) if replay is not None else None
        if stored is not None:  # the clip as the teacher scored it, read back instead of decoded
            return self._augment({**stored, "label": int(e.label), "key": e.key, "index": int(index)}, index)
        extra: dict[str, Any] = {}

        def choose(info):
            views, more = self.policy.pick(index, e.key, info, self.epoch)
            extra.update(more)
            return views

        clips, views = cut_views(e.path, choose, self.clip_cfg.size)  # decoded once for all views
        arrays = torch.from_numpy(np.stack([v.to_array() for v in views]))
        layout = self.policy.layout
        if layout == "one":
            sample = {"video": clips[0], "view": arrays[0]}
        elif layout == "pair":
            sample = {"video": clips[0], "video2": clips[1], "view": arrays}
        else:
            sample = {"video": torch.stack(clips), "view": arrays}
        sample.update(label=int(e.label), key=e.key, index=int(index))
        sample.update(extra)
        return self._augment(sample, index)

    def _augment(self, sample: dict, index: int) -> dict:
        """The photometric jitter of ``clip.jitter`` on a training policy's clips (``video``, ``video2``)."""
        strength = float(getattr(self.clip_cfg, "jitter", 0.0) or 0.0)
        if strength <= 0 or not getattr(self.policy, "augments", False):
            return sample
        seed = getattr(self.policy, "seed", 0)
        for stream, name in enumerate(("video", "video2")):
            if name in sample:
                sample[name] = photometric_jitter(sample[name], jitter_rng(seed, self.epoch, index, stream), strength)
        return sample


class FrameDataset(torch.utils.data.Dataset):
    """Item ``i``: ``frames_per_clip`` random frames of video ``i`` of ``manifest`` and one random
    ``crop x crop`` box (the same for all its frames): ``{"frames": float32 (F,3,crop,crop) in [0,1],
    "key": str}``. Random choices come from ``default_rng([seed, epoch, i])`` (call :meth:`set_epoch`),
    so an epoch is reproducible whatever the worker count. A video smaller than ``crop`` is resized
    up (bilinear) to fit. Bad videos are removed before training (:func:`dlkdd.data.prepare.prepare_data`).
    """

    def __init__(self, manifest: Manifest, frames_per_clip: int, crop: int, seed: int = 0) -> None:
        self.manifest = manifest
        self.frames_per_clip = int(frames_per_clip)
        self.crop = int(crop)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i: int) -> dict[str, Any]:
        entry = self.manifest[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        n = probe(entry.path).num_frames
        k = self.frames_per_clip
        idx = np.sort(rng.choice(n, size=k, replace=n < k)).tolist()
        x = torch.from_numpy(np.ascontiguousarray(decode(entry.path, idx))).permute(0, 3, 1, 2).float().div_(255.0)
        h, w = x.shape[-2:]
        if min(h, w) < self.crop:
            s = self.crop / min(h, w)
            x = F.interpolate(x, size=(max(self.crop, math.ceil(h * s)), max(self.crop, math.ceil(w * s))),
                              mode="bilinear", align_corners=False).clamp_(0, 1)
            h, w = x.shape[-2:]
        y0 = int(rng.integers(0, h - self.crop + 1))
        x0 = int(rng.integers(0, w - self.crop + 1))
        return {"frames": x[:, :, y0:y0 + self.crop, x0:x0 + self.crop].contiguous(), "key": entry.key}


def collate(samples: list[dict]) -> dict:
    """Stack tensors (``video``, ``view``, ``frames``, ``teacher_logits`` ...), tensor ``label``/``index``
    (int64), keep ``key`` and other non-tensor fields as lists."""
    out: dict[str, Any] = {}
    for k in samples[0]:
        v = [s[k] for s in samples]
        if k in ("label", "index"):
            out[k] = torch.tensor(v, dtype=torch.long)
        elif isinstance(v[0], torch.Tensor):
            out[k] = torch.stack(v)
        else:
            out[k] = v
    return out
