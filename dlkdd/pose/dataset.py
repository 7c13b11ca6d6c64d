"""Windows of stored poses as samples: what the pose family's stages train and score on. No video is read.

:func:`load_poses` reads a pose store into memory, in a manifest's order (joined by clip key).
``PoseDataset(manifest, poses, clip_cfg, pose_stride, policy)[i]`` cuts the windows the policy picks
(views, :mod:`dlkdd.pose.sampling`) from clip ``i``'s keypoints::

    layout "one":   {"video": float32 (T,33,4), "view": float64 (P,)}
    layout "stack": {"video": float32 (V,T,33,4), "view": float64 (V,P)}
    always:         {"label": int, "key": str, "index": int} + the policy's extra fields

(``video`` is the field the training engine feeds to the model.) A view with ``flip`` is mirrored
(:func:`dlkdd.pose.features.flip_keypoints`). Policies, each ``pick(index, key, info, epoch) -> (views, extra)``
with ``info.num_frames`` / ``info.rows``:

* :class:`RandomWindow` (training): :func:`~dlkdd.pose.sampling.random_window` from ``view_rng(seed, epoch, index)``,
  flipped with p = 0.5 when ``clip.flip``.
* :class:`CenterWindow` (validation): the centred window.
* :class:`CacheWindows` (cache-logits): :func:`~dlkdd.pose.sampling.window_views` ``(cache.seed, key)``;
  with ``clip.flip`` the 2nd, 4th ... random windows mirrored.
* :class:`WindowGrid` (evaluation): ``clips`` windows evenly spaced over the posed rows.
* :class:`dlkdd.data.views.StoredView` (student): a stored window with the teacher's logits for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlkdd.data.views import View, view_rng
from dlkdd.errors import CacheError
from dlkdd.pose.features import flip_keypoints
from dlkdd.pose.sampling import last_start, center_window, pose_window, random_window, view_rows, window_views
from dlkdd.pose.store import PoseStore

__all__ = ["PoseArrays", "load_poses", "PoseDataset", "RandomWindow", "CenterWindow", "CacheWindows", "WindowGrid"]


@dataclass
class PoseArrays:
    """A pose store's arrays in a manifest's order: ``keypoints (N,R,33,4)``, ``rows (N,)``, ``frames (N,)``;
    ``stride`` (pose.stride it was made with), ``path``, ``meta``."""

    keypoints: np.ndarray
    rows: np.ndarray
    frames: np.ndarray
    stride: int
    path: str
    meta: dict


def load_poses(path: Any, manifest: Any) -> PoseArrays:
    """The complete pose store at ``path`` for the clips of ``manifest`` (:class:`CacheError` if it lacks one)."""
    with PoseStore.open(path) as s:
        if not s.meta.get("complete"):
            raise CacheError(f"pose store {path} is incomplete; finish it with `dlkdd pose` (it resumes)")
        index = {k: i for i, k in enumerate(s.keys())}
        missing = [k for k in manifest.keys() if k not in index]
        if missing:
            raise CacheError(f"pose store {path} lacks {len(missing)} clip(s) of the list ({missing[0]}, ...); "
                             f"it was made for another list")
        a = s.read_all()
        rows = np.asarray([index[k] for k in manifest.keys()], np.int64)
        return PoseArrays(a["keypoints"][rows], a["rows"][rows], a["frames"][rows], int(s.meta["spec"]["stride"]),
                          str(path), dict(s.meta))


@dataclass(frozen=True)
class _Info:
    num_frames: int
    rows: int


class PoseDataset(torch.utils.data.Dataset):
    """See the module docstring."""

    def __init__(self, manifest: Any, poses: PoseArrays, clip_cfg: Any, policy: Any):
        self.manifest, self.poses, self.clip_cfg, self.policy = manifest, poses, clip_cfg, policy
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.manifest)

    def window(self, index: int, view: View) -> torch.Tensor:
        """float32 ``(T,33,4)``: the keypoints of ``view`` on clip ``index`` (mirrored if ``view.flip``)."""
        p = self.poses
        rows = view_rows(view, int(p.frames[index]), p.stride, int(p.rows[index]))
        x = torch.from_numpy(p.keypoints[index][rows])
        return flip_keypoints(x) if view.flip else x

    def __getitem__(self, index: int) -> dict[str, Any]:
        e = self.manifest[index]
        info = _Info(int(self.poses.frames[index]), int(self.poses.rows[index]))
        views, extra = self.policy.pick(index, e.key, info, self.epoch)
        views = [v if isinstance(v, View) else View.from_array(v) for v in views]
        clips = [self.window(index, v) for v in views]
        arrays = torch.from_numpy(np.stack([v.to_array() for v in views]))
        if getattr(self.policy, "layout", "one") == "one":
            sample = {"video": clips[0], "view": arrays[0]}
        else:
            sample = {"video": torch.stack(clips), "view": arrays}
        sample.update(label=int(e.label), key=e.key, index=int(index), **extra)
        return sample


class _Windows:
    layout = "one"
    augments = False

    def __init__(self, clip_cfg: Any, pose_stride: int, seed: int = 0):
        self.clip_cfg, self.stride, self.seed = clip_cfg, int(pose_stride), int(seed)


class RandomWindow(_Windows):
    augments = True

    def pick(self, index: int, key: str, info: Any, epoch: int) -> tuple[list[View], dict]:
        rng = view_rng(self.seed, epoch, index)
        v = random_window(info.rows, self.clip_cfg, self.stride, rng)
        flip = bool(self.clip_cfg.flip) and bool(rng.random() < 0.5)
        return [View(v.start, v.stride, v.frames, v.y0, v.x0, v.h, v.w, flip)], {}


class CenterWindow(_Windows):
    def pick(self, index: int, key: str, info: Any, epoch: int) -> tuple[list[View], dict]:
        return [center_window(info.rows, self.clip_cfg, self.stride)], {}


class CacheWindows(_Windows):
    layout = "stack"

    def __init__(self, clip_cfg: Any, pose_stride: int, k: int, seed: int = 0):
        super().__init__(clip_cfg, pose_stride, seed)
        self.k = int(k)

    def pick(self, index: int, key: str, info: Any, epoch: int) -> tuple[list[View], dict]:
        views = window_views(key, info.rows, self.clip_cfg, self.stride, self.k, self.seed)
        if self.clip_cfg.flip:  # with clip.flip, every second random window mirrored (2, 4, ...): fixed per key
            views = [View(*v.astuple()[:7], j % 2 == 0 and j > 0) for j, v in enumerate(views)]
        return views, {}


class WindowGrid(_Windows):
    layout = "stack"

    def __init__(self, clip_cfg: Any, pose_stride: int, clips: int = 1):
        super().__init__(clip_cfg, pose_stride)
        self.clips = int(clips)

    def pick(self, index: int, key: str, info: Any, epoch: int) -> tuple[list[View], dict]:
        if self.clips == 1:
            return [center_window(info.rows, self.clip_cfg, self.stride)], {}
        last = last_start(info.rows, self.clip_cfg, self.stride)
        starts = [int(round(s)) for s in np.linspace(0, last, self.clips)]  # V = clips for every clip (batchable)
        return [pose_window(s, self.clip_cfg, self.stride) for s in starts], {}
