"""Views: how one clip is cut from a video, as replayable data.

A :class:`View` is ``(start, stride, frames, y0, x0, h, w, flip)``: frame indices
``(start + i*stride) % num_frames`` for ``i < frames`` (short videos loop, as in the
reference implementations of DarkLight / R(2+1)D-BERT), a crop box in normalised
coordinates of the frame (``y0, x0, h, w`` in [0,1]) and a horizontal flip.

* :func:`random_view` (training): stride ``clip.stride`` (or, with ``clip.stride_jitter`` j > 0,
  uniform in ``[stride - j, stride + j]``, at least 1), start uniform over the valid starts;
  square crop of side ``short_side * (size/resize) * U[min_scale, max_scale]`` at a uniform position; flip with p = 0.5 if ``clip.flip``. (The usual "resize the short
  side to ``resize``, random-crop ``size``" augmentation, with scale jitter.)
* :func:`center_view` (evaluation): centred temporal window, centred square crop of side
  ``short_side * size/resize``, no flip.
* :func:`apply_view`: uint8 ``(T,H,W,3)`` frames -> float32 ``(3,T,size,size)`` in [0,1]:
  crop (pixel box = round(normalised box * frame size)), bilinear resize with antialias
  (``align_corners=False``), flip. Deterministic: the same view on the same frames gives a
  bit-identical tensor, also after ``View.to_array()`` / ``View.from_array()`` (float64).
* :func:`load_clip` / :func:`load_clips` / :func:`cut_views`: decode only the frames needed (once
  for several views).

View policies - which views :class:`dlkdd.data.dataset.ClipDataset` cuts for sample ``index`` at
``epoch`` - all live here, so the guarantee that the student replays exactly the view the teacher
scored can be read in one place:

* :class:`RandomView` (training): one :func:`random_view` from :func:`view_rng` ``(seed, epoch, index)``.
* :class:`CenterView` (validation): the :func:`center_view`.
* :class:`StoredView` (student): one of the clip's V views stored in the logit cache, picked by
  ``view_rng(seed, epoch, index)``, with the teacher's logits for that very view.
* :class:`CacheViews` (cache-logits): the centred view and K-1 random views from a generator
  seeded by ``(cache.seed, sha256(key))``: they depend on neither the order nor the process.
* :class:`TwoViews` (ActLumos pre-training): two random views, start frames forced apart.
* :class:`EvalGrid` (evaluation): ``clips`` temporal windows x ``crops`` spatial crops.

A policy's ``pick(index, key, info, epoch)`` returns ``(views, extra)``: the views to cut (``info``:
the video's :class:`~dlkdd.data.video.VideoInfo`) and further sample fields (``teacher_logits``);
``layout`` says how the dataset presents the clips: ``"one"`` -> ``video (3,T,S,S)``,
``"pair"`` -> ``video`` and ``video2``, ``"stack"`` -> ``video (V,3,T,S,S)``. A policy may also
have ``replay(index, epoch)``: the sample's ``video`` and ``view`` without decoding (StoredView on a
store that keeps the teacher's clips), or None.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import astuple, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dlkdd.data.video import VideoReader

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
    "cut_views",
    "view_rng",
    "key_rng",
    "two_views",
    "grid_views",
    "clip_views",
    "RandomView",
    "CenterView",
    "StoredView",
    "CacheViews",
    "TwoViews",
    "EvalGrid",
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
    stride = int(clip_cfg.stride)
    jit = int(getattr(clip_cfg, "stride_jitter", 0) or 0)
    if jit > 0:  # temporal jitter: a stride from [stride - j, stride + j] (>= 1); no draw when off
        stride = int(rng.integers(max(1, stride - jit), stride + jit + 1))
    span = (clip_cfg.frames - 1) * stride + 1
    start = int(rng.integers(0, num_frames - span + 1)) if num_frames > span else 0
    scale = float(rng.uniform(clip_cfg.min_scale, clip_cfg.max_scale))
    frac = min(1.0, (clip_cfg.size / clip_cfg.resize) * scale)  # of the short side
    h, w = _box_fracs(frac, _aspect(height, width))
    y0 = float(rng.uniform(0.0, 1.0 - h))
    x0 = float(rng.uniform(0.0, 1.0 - w))
    flip = bool(clip_cfg.flip) and bool(rng.random() < 0.5)
    return View(start, stride, clip_cfg.frames, y0, x0, h, w, flip)


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
    with VideoReader(path) as reader:
        views = list(make_views(reader.info))
        n = num_frames or reader.num_frames
        idx = [frame_indices(v, n) for v in views]
        uniq = sorted({i for ii in idx for i in ii})
        frames = reader.get(uniq)
    pos = {f: k for k, f in enumerate(uniq)}
    return [apply_view(frames[[pos[i] for i in ii]], v, size) for v, ii in zip(views, idx)], views


# ------------------------------------------------------------------------------ view policies
def view_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample ``index``'s training view at ``epoch``: reproducible, and the same
    whichever DataLoader worker loads the sample."""
    return np.random.default_rng((int(seed), int(epoch), int(index)))


def key_rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the clip's key (not its position or process)."""
    h = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:15], 16)
    return np.random.default_rng((int(seed), h))


def clip_views(key: str, num_frames: int, height: int, width: int, clip_cfg: Any, k: int, seed: int) -> list[View]:
    """The K views cache-logits stores for clip ``key``: centred view first, then K-1 random views
    from :func:`key_rng` ``(seed, key)``."""
    rng = key_rng(seed, key)
    views = [center_view(num_frames, clip_cfg, height, width)]
    views += [random_view(num_frames, clip_cfg, rng, height, width) for _ in range(k - 1)]
    return views


def two_views(num_frames: int, clip_cfg: Any, rng: np.random.Generator, height: int | None = None,
              width: int | None = None) -> tuple[View, View]:
    """Two random training views of one video; their start frames differ whenever the video has
    more than one possible start (the second is shifted by a random non-zero offset if equal)."""
    v1 = random_view(num_frames, clip_cfg, rng, height, width)
    v2 = random_view(num_frames, clip_cfg, rng, height, width)
    starts = num_frames - _span(clip_cfg) + 1  # possible start frames
    if starts > 1 and v2.start == v1.start:
        v2 = dataclasses.replace(v2, start=int((v1.start + rng.integers(1, starts)) % starts))
    return v1, v2


def grid_views(num_frames: int, height: int, width: int, clip_cfg: Any, clips: int = 1, crops: int = 1) -> list[View]:
    """``clips`` x ``crops`` fixed evaluation views (clips=crops=1: the centred view): windows evenly
    spaced over the video; crops at both ends and the centre of the frame's long side."""
    base = center_view(num_frames, clip_cfg, height, width)
    if clips <= 1:
        starts = [base.start]
    else:
        last = max(0, num_frames - _span(clip_cfg))
        starts = sorted({int(round(s)) for s in np.linspace(0, last, clips)}) if last > 0 else [0] * clips
    if crops <= 1:
        boxes = [(base.y0, base.x0)]
    elif base.w < 1.0 - 1e-9:  # landscape: slide along x
        boxes = [(base.y0, float(x)) for x in np.linspace(0.0, 1.0 - base.w, crops)]
    else:
        boxes = [(float(y), base.x0) for y in np.linspace(0.0, 1.0 - base.h, crops)]
    return [dataclasses.replace(base, start=s, y0=y0, x0=x0) for s in starts for (y0, x0) in boxes]



class _Policy:
    layout = "one"
    augments = False  # a training policy: ClipDataset applies clip.jitter to its clips

    def views(self, index: int, key: str, info: Any, epoch: int) -> list[View]:  # pragma: no cover - abstract
        raise NotImplementedError

    def pick(self, index: int, key: str, info: Any, epoch: int) -> tuple[list[View], dict[str, Any]]:
        return self.views(index, key, info, epoch), {}


class RandomView(_Policy):
    """One random training view per sample, from :func:`view_rng` ``(seed, epoch, index)``."""

    augments = True

    def __init__(self, clip_cfg: Any, seed: int = 0):
        self.clip_cfg, self.seed = clip_cfg, int(seed)

    def views(self, index: int, key: str, info: Any, epoch: int) -> list[View]:
        return [random_view(info.num_frames, self.clip_cfg, view_rng(self.seed, epoch, index), info.height,
                            info.width)]


class CenterView(_Policy):
    """The centred evaluation view."""

    def __init__(self, clip_cfg: Any):
        self.clip_cfg = clip_cfg

    def views(self, index: int, key: str, info: Any, epoch: int) -> list[View]:
        return [center_view(info.num_frames, self.clip_cfg, info.height, info.width)]


class StoredView(_Policy):
    """Replay one of the clip's stored views, with every stored field of that view.

    ``rows``: an object with ``read_fields(index) -> {"views": float64 (V,P), field: (V, ...), ...}``
    for sample ``index`` and ``views_per_clip`` (:class:`dlkdd.cache.reader.StoreRows` joins a logit
    store to a manifest by key; :class:`dlkdd.cache.ensemble.EnsembleRows` several); an object with only
    ``read(index) -> (targets (V,C), views (V,P))`` and ``target_field`` works too. The view is
    ``view_rng(seed, epoch, index).integers(V)``; the sample gains each field of exactly that view as a
    float32 tensor (``teacher_logits`` (C,): raw logits of one teacher; ``teacher_features`` (D,) when
    stored; ``teacher_probs`` (C,): an ensemble's soft target at tau).
    """

    augments = True

    def __init__(self, rows: Any, seed: int = 0):
        self.rows, self.seed = rows, int(seed)

    def choice(self, index: int, epoch: int) -> int:
        """Which of the clip's stored views sample ``index`` replays at ``epoch``."""
        return int(view_rng(self.seed, epoch, index).integers(self.rows.views_per_clip))

    def _stored(self, index: int, epoch: int) -> tuple[int, np.ndarray, dict[str, Any]]:
        """``(v, the view's parameters (P,), {field: float32 tensor})`` of sample ``index`` at ``epoch``."""
        if hasattr(self.rows, "read_fields"):
            fields = dict(self.rows.read_fields(index))
            views = fields.pop("views")
        else:
            targets, views = self.rows.read(index)
            fields = {getattr(self.rows, "target_field", "teacher_logits"): targets}
        v = self.choice(index, epoch)
        return v, views[v], {k: torch.from_numpy(np.ascontiguousarray(a[v], dtype=np.float32)) for k, a in fields.items()}

    def replay(self, index: int, epoch: int) -> dict[str, Any] | None:
        """The whole sample without decoding, when ``rows`` holds the clips the teacher scored
        (``rows.clips``, :mod:`dlkdd.cache.clips`); None otherwise."""
        if getattr(self.rows, "clips", None) is None:
            return None
        v, view, target = self._stored(index, epoch)
        return {"video": self.rows.read_clip(index, v), "view": torch.from_numpy(np.ascontiguousarray(view)), **target}

    def pick(self, index: int, key: str, info: Any, epoch: int) -> tuple[list[View], dict[str, Any]]:
        _, view, target = self._stored(index, epoch)
        return [View.from_array(view)], target


class CacheViews(_Policy):
    """The K views cache-logits scores per clip (:func:`clip_views`), stacked."""

    layout = "stack"

    def __init__(self, clip_cfg: Any, k: int, seed: int = 0):
        self.clip_cfg, self.k, self.seed = clip_cfg, int(k), int(seed)

    def views(self, index: int, key: str, info: Any, epoch: int) -> list[View]:
        return clip_views(key, info.num_frames, info.height, info.width, self.clip_cfg, self.k, self.seed)


class StoredViews(_Policy):
    """The views another logit store holds for each clip (``views`` ``{key: (K,P) array}``), stacked: a second
    teacher scores exactly the windows a first one stored, so their caches can teach one student together
    (``cache-logits --views-from``; e.g. an RGB teacher on the pose teacher's posed-frame windows)."""

    layout = "stack"

    def __init__(self, views: dict[str, np.ndarray]):
        self.stored = views

    def views(self, index: int, key: str, info: Any, epoch: int) -> list[View]:
        return [View.from_array(a) for a in self.stored[key]]


class TwoViews(_Policy):
    """Two random views of each clip (:func:`two_views` from ``view_rng(seed, epoch, index)``)."""

    layout = "pair"
    augments = True

    def __init__(self, clip_cfg: Any, seed: int = 0):
        self.clip_cfg, self.seed = clip_cfg, int(seed)

    def views(self, index: int, key: str, info: Any, epoch: int) -> list[View]:
        return list(two_views(info.num_frames, self.clip_cfg, view_rng(self.seed, epoch, index), info.height,
                              info.width))


class EvalGrid(_Policy):
    """The multi-view test grid (:func:`grid_views`), stacked; logits are averaged per video."""

    layout = "stack"

    def __init__(self, clip_cfg: Any, clips: int = 1, crops: int = 1):
        self.clip_cfg, self.clips, self.crops = clip_cfg, int(clips), int(crops)

    def views(self, index: int, key: str, info: Any, epoch: int) -> list[View]:
        return grid_views(info.num_frames, info.height, info.width, self.clip_cfg, self.clips, self.crops)
