"""Decoded views stored beside the logits, so that the student never decodes a video.

``dlkdd cache-logits`` decodes every training clip once and cuts its K views for the teacher.
With ``cache.clips: true`` it also keeps those K clips, as uint8, in a Zarr array beside the
logit store (``<store>.clips.zarr``, :func:`clip_store_path`):

    clips (N, V, 3, T, S, S) uint8, one chunk per view (zstd), row i = the logit store's row i

and the teacher scores exactly the stored clips: ``x = q / 255`` with ``q = round(255 * clip)``
(:func:`quantize`, :func:`dequantize`; the clip after crop and resize, so ``|x - clip| <= 1/510``).
The student replays a stored view by reading its chunk (:class:`ClipStore`), bit-identical to
what the teacher saw, instead of decoding 8-64 frames of H.264 and resizing them. A logit store
records ``clips: "uint8"`` in its metadata when its teacher saw stored clips; the student then
needs the clip store (and reads it, whatever its own ``cache.clips`` says).

Size: ``N * V * 3*T*S*S`` bytes before compression - 75 kB per view at 8x56x56 (arid6-mini:
104 clips x 8 views = 62 MB raw, ~39 MB compressed), 2.4 MB per view at the paper's 64x112x112.
Rows are written before the logit store marks them done, so a done row always has its clips
(a kill in between re-scores the row and rewrites the same bytes).
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlkdd.errors import CacheError

log = logging.getLogger(__name__)

__all__ = ["ClipStore", "clip_store_path", "quantize", "dequantize", "zarr_available"]

SUFFIX = ".clips.zarr"


def clip_store_path(store_path: str | Path) -> Path:
    """``<store>.clips.zarr`` beside the logit store ``store_path`` (a ``.zarr`` or ``.h5``)."""
    p = Path(store_path)
    return p.with_name(p.name + SUFFIX)


def zarr_available() -> bool:
    try:
        import zarr  # noqa: F401
    except ImportError:
        return False
    return True


def quantize(clips: Any) -> Any:
    """float ``(..., 3, T, S, S)`` in [0,1] (torch) -> uint8 ``round(255 x)`` (torch)."""
    import torch

    return (clips * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def dequantize(q: Any) -> Any:
    """uint8 (numpy or torch) -> float32 torch ``q / 255``: what the teacher and the student see."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(q)) if isinstance(q, np.ndarray) else q
    return t.float().div_(255.0)


class ClipStore:
    """The uint8 clips of a logit store's rows; see the module doc.

    Like :class:`~dlkdd.cache.store.LogitStore`, it opens the array lazily in each process (a
    DataLoader worker after ``fork`` re-opens it) and pickles as its path and mode only."""

    def __init__(self, path: str | Path, mode: str = "r"):
        self.path = Path(path)
        self.mode = mode
        if not self.path.is_dir():
            raise CacheError(f"{self.path}: the stored clips of this logit store are missing (its teacher scored "
                             "them; rebuild the store with `dlkdd cache-logits --overwrite`)")
        self._a: Any = None
        self._pid: int | None = None
        self._array()  # errors surface at open time

    @classmethod
    def create(cls, path: str | Path, num_clips: int, views: int, frames: int, size: int) -> "ClipStore":
        """A new, empty store (an existing one at ``path`` is replaced); returned open for writing."""
        import zarr

        path = Path(path)
        if path.exists():
            shutil.rmtree(path)
        shape = (int(num_clips), int(views), 3, int(frames), int(size), int(size))
        g = zarr.open_group(str(path), mode="w-", zarr_format=3)
        g.create_array("clips", shape=shape, dtype="uint8", chunks=(1, 1) + shape[2:], fill_value=0)
        g.update_attributes({"kind": "dlkdd-clips", "layout": "N,V,3,T,S,S uint8 = round(255 * clip)"})
        return cls(path, "r+")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "ClipStore":
        return cls(path, mode)

    def _array(self) -> Any:
        pid = os.getpid()
        if self._a is not None and self._pid == pid:
            return self._a
        try:
            import zarr

            self._a = zarr.open_group(str(self.path), mode=self.mode, zarr_format=3)["clips"]
        except ImportError:
            raise CacheError(f"{self.path}: reading stored clips needs the zarr package (pip install zarr)") from None
        except Exception as e:  # zarr raises several types for a foreign directory
            raise CacheError(f"{self.path} is not a readable clip store: {e}") from None
        self._pid = pid
        return self._a

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "mode": self.mode, "_a": None, "_pid": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array().shape)

    def write_many(self, rows: Sequence[int], clips: Any) -> None:
        """``clips`` uint8 ``(len(rows), V, 3, T, S, S)`` (numpy or torch) into ``rows``."""
        q = clips.numpy() if hasattr(clips, "numpy") else np.asarray(clips)
        if q.dtype != np.uint8 or q.shape[1:] != self.shape[1:] or q.shape[0] != len(rows):
            raise CacheError(f"{self.path}: clips of shape {q.shape} {q.dtype} do not fit rows of "
                             f"{self.shape[1:]} uint8")
        a = self._array()
        for j, r in enumerate(rows):
            a[int(r)] = q[j]

    def read(self, row: int, view: int) -> np.ndarray:
        """uint8 ``(3, T, S, S)`` of view ``view`` of row ``row``."""
        return np.asarray(self._array()[int(row), int(view)])
