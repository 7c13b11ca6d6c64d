"""Views: how one clip is cut from a video, as replayable data.

A :class:`View` is ``(start, stride, frames, y0, x0, h, w, flip)``: frame indices
``(start + i*stride) % num_frames`` for ``i < frames`` (short videos loop, as in the
reference implementations of DarkLight / R(2+1)D-BERT), a crop box in normalised
coordinates of the frame (``y0, x0, h, w`` in [0,1]) and a horizontal flip.

* :func:`random_view` (training): start uniform over the valid starts, stride
  ``clip.stride``; square crop of side ``short_side * (size/resize) * U[min_scale, max_scale]``
  at a uniform position; flip with p = 0.5 if ``clip.flip``. (The usual "resize the short
  side to ``resize``, random-crop ``size``" augmentation, with scale jitter.)
* :func:`center_view` (evaluation): centred temporal window, centred square crop of side
  ``short_side * size/resize``, no flip.
* :func:`apply_view`: uint8 ``(T,H,W,3)`` frames -> float32 ``(3,T,size,size)`` in [0,1]:
  crop (pixel box = round(normalised box * frame size)), bilinear resize with antialias
  (``align_corners=False``), flip. Deterministic: the same view on the same frames gives a
  bit-identical tensor, also after ``View.to_array()`` / ``View.from_array()`` (float64).
* :func:`load_clip` / :func:`load_clips`: decode only the frames needed (once for several views).
"""
from __future__ import annotations

import os
from dataclasses import astuple, dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "View",
    "VIEW_PARAMS",
    "frame_indices",
    "crop_box",
    "random_view",
    "center_view",
    "apply_view",
    "load_clip",
    "load_clips",
]

VIEW_PARAMS = 8


@dataclass(frozen=True)
class View:
    """One clip's cut: temporal ``start``, ``stride``, ``frames``; crop box ``y0, x0, h, w``
    (fractions of the frame height/width); horizontal ``flip``."""

    start: int
    stride: int
    frames: int
    y0: float
    x0: float
    h: float
    w: float
    flip: bool

    def to_array(self) -> np.ndarray:
        """float64 ``(VIEW_PARAMS,)``: exact for the ints and the float64 box."""
        return np.array([self.start, self.stride, self.frames, self.y0, self.x0, self.h, self.w,
                         1.0 if self.flip else 0.0], dtype=np.float64)

    @classmethod
    def from_array(cls, a) -> "View":
        a = np.asarray(a, dtype=np.float64).reshape(-1)
        if a.shape[0] != VIEW_PARAMS:
            raise ValueError(f"a view has {VIEW_PARAMS} parameters, got {a.shape[0]}")
        return cls(int(round(a[0])), int(round(a[1])), int(round(a[2])), float(a[3]), float(a[4]),
                   float(a[5]), float(a[6]), bool(a[7] >= 0.5))

    def astuple(self) -> tuple:
        return astuple(self)


def frame_indices(view: View, num_frames: int) -> list[int]:
    """Frame numbers of a view; videos shorter than the span loop (index modulo ``num_frames``)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return [(view.start + i * view.stride) % num_frames for i in range(view.frames)]


def _span(clip_cfg) -> int:
    return (clip_cfg.frames - 1) * clip_cfg.stride + 1


def _aspect(height: int | None, width: int | None) -> float:
    """height / width of the frame (1 when unknown: then h == w in normalised units)."""
    if height and width:
        return height / width
    return 1.0


def random_view(num_frames: int, clip_cfg, rng: np.random.Generator,
                height: int | None = None, width: int | None = None) -> View:
    """A random training view (see module docstring). ``height``/``width``: the frame size,
    needed to make the crop square in pixels (default: square frame)."""
    span = _span(clip_cfg)
    start = int(rng.integers(0, num_frames - span + 1)) if num_frames > span else 0
    scale = float(rng.uniform(clip_cfg.min_scale, clip_cfg.max_scale))
    frac = min(1.0, (clip_cfg.size / clip_cfg.resize) * scale)  # of the short side
    h, w = _box_fracs(frac, _aspect(height, width))
    y0 = float(rng.uniform(0.0, 1.0 - h))
    x0 = float(rng.uniform(0.0, 1.0 - w))
    flip = bool(clip_cfg.flip) and bool(rng.random() < 0.5)
    return View(start, clip_cfg.stride, clip_cfg.frames, y0, x0, h, w, flip)


def center_view(num_frames: int, clip_cfg, height: int | None = None, width: int | None = None) -> View:
    """The centred evaluation view: middle temporal window, centred square crop, no flip."""
    span = _span(clip_cfg)
    start = max(0, (num_frames - span) // 2)
    frac = clip_cfg.size / clip_cfg.resize
    h, w = _box_fracs(frac, _aspect(height, width))
    return View(start, clip_cfg.stride, clip_cfg.frames, (1.0 - h) / 2, (1.0 - w) / 2, h, w, False)


def _box_fracs(frac_of_short: float, aspect: float) -> tuple[float, float]:
    """Normalised (h, w) of a square whose side is ``frac_of_short`` of the short side."""
    if aspect <= 1.0:  # landscape: height is the short side
        return frac_of_short, frac_of_short * aspect
    return frac_of_short / aspect, frac_of_short


def crop_box(view: View, height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel box ``(top, left, h, w)`` of a view on a ``height x width`` frame (inside the frame)."""
    ch = min(height, max(1, int(round(view.h * height))))
    cw = min(width, max(1, int(round(view.w * width))))
    top = min(max(0, int(round(view.y0 * height))), height - ch)
    left = min(max(0, int(round(view.x0 * width))), width - cw)
    return top, left, ch, cw


def apply_view(frames: np.ndarray, view: View, size: int):
    """Crop, resize and flip frames already selected by :func:`frame_indices`.

    frames: uint8 ``(T,H,W,3)``; returns torch float32 ``(3,T,size,size)`` in [0,1].
    """
    import torch
    import torch.nn.functional as F

    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T,H,W,3), got shape {tuple(frames.shape)}")
    _, H, W, _ = frames.shape
    top, left, ch, cw = crop_box(view, H, W)
    crop = np.ascontiguousarray(frames[:, top:top + ch, left:left + cw, :])
    x = torch.from_numpy(crop).permute(0, 3, 1, 2).float().div_(255.0)  # (T,3,h,w)
    if (ch, cw) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0)
    if view.flip:
        x = x.flip(-1)
    return x.permute(1, 0, 2, 3).contiguous()  # (3,T,S,S)


def load_clip(path: str | os.PathLike, view: View, size: int, num_frames: int | None = None):
    """Decode the frames of ``view`` from ``path`` and apply it: float32 ``(3,T,size,size)``.

    ``num_frames``: the frame count the view was drawn for (default: the video's own).
    """
    return load_clips(path, [view], size, num_frames)[0]


def load_clips(path: str | os.PathLike, views: Sequence[View], size: int, num_frames: int | None = None) -> list:
    """Several views of one video, decoding it once (the frames ``[min, max]`` all views need)."""
    return cut_views(path, lambda info: views, size, num_frames)[0]


def cut_views(path: str | os.PathLike, make_views: Callable[[Any], Sequence[View]], size: int,
              num_frames: int | None = None) -> tuple[list, list[View]]:
    """Open ``path`` once, let ``make_views(info)`` (a :class:`~dlkdd.data.video.VideoInfo`) choose
    the views from the video's frame count and size, decode the frames they need once, and cut
    them: ``([(3,T,size,size) float32, ...], views)``. ``num_frames``: the frame count the views
    were drawn for (default: the video's own)."""
    from dlkdd.data.video import VideoReader

    with VideoReader(path) as reader:
        views = list(make_views(reader.info))
        n = num_frames or reader.num_frames
        idx = [frame_indices(v, n) for v in views]
        uniq = sorted({i for ii in idx for i in ii})
        frames = reader.get(uniq)
    pos = {f: k for k, f in enumerate(uniq)}
    return [apply_view(frames[[pos[i] for i in ii]], v, size) for v, ii in zip(views, idx)], views
