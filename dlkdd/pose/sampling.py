"""Which video frames the pose stage poses, and which stored rows a view reads.

The rule (``pose.stride`` s, ``pose.max_frames`` R): a video of N frames is posed at frames
``0, s, 2s, ...`` while below N, at most R of them; stored row ``r`` is video frame ``r*s``. A
:class:`~dlkdd.data.views.View` ``(start, stride, frames)`` (frame ``(start + i*stride) % N``, short
videos loop as everywhere in dlkdd) reads row ``min(frame // s, rows - 1)``: the posed frame at or just
before it (exactly it when ``start`` and ``stride`` are multiples of s, as every pose window is). So a
window stored in the logit cache is data that a pose student (rows of the pose store) and an RGB
student (frames of the video) replay alike.

Pose windows (:func:`pose_window`, :func:`center_window`, :func:`random_window`, :func:`window_views`):
``clip.frames`` rows at a stride of ``clip.stride`` video frames (rounded up to a multiple of s), whole
frame, no flip (the crop box of a view is meaningless for keypoints and stays ``(0, 0, 1, 1)``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from dlkdd.data.views import View, key_rng

__all__ = ["posed_frames", "num_rows", "view_rows", "window_stride", "pose_window", "last_start", "center_window",
           "random_window", "window_views"]


def num_rows(num_frames: int, stride: int, max_rows: int) -> int:
    """How many frames of an ``num_frames``-frame video are posed (0 for an empty video)."""
    return max(0, min(math.ceil(num_frames / stride), max_rows))


def posed_frames(num_frames: int, stride: int, max_rows: int) -> list[int]:
    """The video frames posed, in row order: ``[0, s, 2s, ...]`` below ``num_frames``, at most ``max_rows``."""
    return [r * stride for r in range(num_rows(num_frames, stride, max_rows))]


def view_rows(view: View, num_frames: int, stride: int, rows: int) -> np.ndarray:
    """int64 ``(view.frames,)``: the stored rows of ``view``'s frames (see the module docstring)."""
    if rows < 1 or num_frames < 1:
        return np.zeros(view.frames, np.int64)
    f = (view.start + np.arange(view.frames, dtype=np.int64) * view.stride) % num_frames
    return np.minimum(f // stride, rows - 1)


def window_stride(clip_cfg: Any, pose_stride: int) -> int:
    """A window's frame stride: ``clip.stride`` rounded up to a multiple of ``pose.stride``."""
    return pose_stride * max(1, math.ceil(clip_cfg.stride / pose_stride))


def pose_window(start_row: int, clip_cfg: Any, pose_stride: int) -> View:
    """The view of ``clip.frames`` posed frames from row ``start_row``."""
    return View(int(start_row) * pose_stride, window_stride(clip_cfg, pose_stride), int(clip_cfg.frames),
                0.0, 0.0, 1.0, 1.0, False)


def last_start(rows: int, clip_cfg: Any, pose_stride: int) -> int:
    """The last start row of a whole window in ``rows`` posed rows (0 when a window does not fit: it loops)."""
    step = window_stride(clip_cfg, pose_stride) // pose_stride
    return max(0, rows - ((clip_cfg.frames - 1) * step + 1))


def center_window(rows: int, clip_cfg: Any, pose_stride: int) -> View:
    """The centred window (row 0 when the video is shorter than a window: it loops)."""
    return pose_window(last_start(rows, clip_cfg, pose_stride) // 2, clip_cfg, pose_stride)


def random_window(rows: int, clip_cfg: Any, pose_stride: int, rng: np.random.Generator) -> View:
    """A window starting at a uniform row among the valid starts."""
    return pose_window(int(rng.integers(0, last_start(rows, clip_cfg, pose_stride) + 1)), clip_cfg, pose_stride)


def window_views(key: str, rows: int, clip_cfg: Any, pose_stride: int, k: int, seed: int) -> list[View]:
    """The K windows cache-logits stores for clip ``key``: the centred one, then K-1 random ones from
    :func:`dlkdd.data.views.key_rng` ``(seed, key)`` (independent of the order and the process)."""
    rng = key_rng(seed, key)
    return [center_window(rows, clip_cfg, pose_stride)] + [random_window(rows, clip_cfg, pose_stride, rng)
                                                           for _ in range(k - 1)]
