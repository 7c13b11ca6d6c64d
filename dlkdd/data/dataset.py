"""``VideoDataset``: a manifest as a torch Dataset of clips.

Sample ``i`` is a dict::

    {"video": float32 (3,T,S,S) in [0,1], "label": int, "key": str,
     "view": float64 (VIEW_PARAMS,) tensor (the View, replayable), "index": int}

Training draws a :func:`~dlkdd.data.views.random_view` from
``np.random.default_rng((seed, epoch, index))``: reproducible, and the same whichever
DataLoader worker loads the sample. Call :meth:`VideoDataset.set_epoch` before each epoch
(with non-persistent workers, the default, workers copy the dataset when iteration starts,
so the new epoch reaches them). Evaluation uses the centred view.
:func:`collate` batches: tensors stacked, keys kept as a list.
"""
from __future__ import annotations

import logging

import numpy as np

from dlkdd.data.manifest import Manifest
from dlkdd.data.views import View, apply_view, center_view, frame_indices, random_view

log = logging.getLogger(__name__)

__all__ = ["VideoDataset", "collate", "view_rng"]


def view_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample ``index``'s training view at ``epoch``."""
    return np.random.default_rng((int(seed), int(epoch), int(index)))


class VideoDataset:
    """Clips of the videos of ``manifest`` cut as ``clip_cfg`` (:class:`dlkdd.config.ClipConfig`) says."""

    def __init__(self, manifest: Manifest, clip_cfg, train: bool, seed: int = 0):
        self.manifest = manifest
        self.clip_cfg = clip_cfg
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.manifest)

    def view_for(self, index: int, num_frames: int, height: int, width: int) -> View:
        if self.train:
            return random_view(num_frames, self.clip_cfg, view_rng(self.seed, self.epoch, index), height, width)
        return center_view(num_frames, self.clip_cfg, height, width)

    def __getitem__(self, index: int) -> dict:
        import torch

        from dlkdd.data.video import VideoReader

        if not 0 <= index < len(self):
            raise IndexError(index)
        e = self.manifest[index]
        with VideoReader(e.path) as r:
            info = r.info
            view = self.view_for(index, info.num_frames, info.height, info.width)
            frames = r.get(frame_indices(view, info.num_frames))
        video = apply_view(frames, view, self.clip_cfg.size)
        return {"video": video, "label": int(e.label), "key": e.key,
                "view": torch.from_numpy(view.to_array()), "index": int(index)}


def collate(samples: list[dict]) -> dict:
    """Stack ``video``/``view``, tensor ``label``/``index``, keep ``key`` as a list of str."""
    import torch

    out = {
        "video": torch.stack([s["video"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "key": [s["key"] for s in samples],
        "view": torch.stack([s["view"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
    }
    for k in samples[0]:
        if k not in out:
            v = [s[k] for s in samples]
            out[k] = torch.stack(v) if isinstance(v[0], torch.Tensor) else v
    return out
