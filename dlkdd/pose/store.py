"""The pose store: BlazePose keypoints of every clip of one list, computed once (Zarr v3 or HDF5).

Arrays (N clips, R = ``pose.max_frames`` rows; row ``r`` is video frame ``r * pose.stride``,
:mod:`dlkdd.pose.sampling`)::

    keys       (N,)           str      clip keys, the manifest's order (the store is keyed by them)
    keypoints  (N, R, 33, 4)  float32  x, y, z, visibility; zeros where no person (or past ``rows``)
    mask       (N, R)         bool     a person was found in that row
    rows       (N,)           int32    rows posed (``ceil(frames / stride)`` capped at R)
    frames     (N,)           int32    the video's frame count
    done       (N,)           bool     the row is written (set after its data: a killed run resumes)

One clip per chunk, so ranks writing disjoint clips never share a chunk (Zarr; HDF5 has one writer).
Metadata (JSON): ``schema``, ``spec`` (what made it: the BlazePose model's sha256, the enhancer, the
sampling - :func:`pose_spec`), ``manifest_sha256``, ``classes``, ``list``, ``complete``.

The address (:func:`store_path`): ``<dir>/pose-<manifest sha256[:12]>-<spec hash[:12]>-<model sha256[:12]>.zarr``;
the main environment, which has no mediapipe and so cannot hash its model, finds a store by the first two, or
a store of a wider list holding every clip (:func:`find_store`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dlkdd.errors import CacheError

log = logging.getLogger(__name__)

__all__ = ["SCHEMA", "PoseStore", "pose_spec", "spec_hash", "store_path", "find_store", "verify"]

SCHEMA = "dlkdd-pose-store-1"
JOINTS, CHANNELS = 33, 4
_META = "dlkdd_meta"


def pose_spec(pose_cfg: Any, enhancer: Mapping[str, Any], model_sha256: str) -> dict[str, Any]:
    """What makes a pose store: the BlazePose model file, the enhancer (kind, gamma, ZeroDCE weights'
    sha256) and the frame sampling / tracking settings."""
    enh = {"kind": enhancer["kind"]}
    if enhancer["kind"] == "gamma":
        enh["gamma"] = float(enhancer["gamma"])
    if enhancer["kind"] == "zerodce":
        enh["weights_sha256"] = enhancer["weights_sha256"]
    return {"model_sha256": model_sha256, "enhancer": enh, "stride": int(pose_cfg.stride),
            "max_frames": int(pose_cfg.max_frames), "video": bool(pose_cfg.video),
            "min_detection": float(pose_cfg.min_detection), "min_tracking": float(pose_cfg.min_tracking)}


def spec_hash(spec: Mapping[str, Any]) -> str:
    """sha256 of the spec without the model's hash (that one is the name's last part)."""
    body = {k: v for k, v in spec.items() if k != "model_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def store_path(directory: str | os.PathLike, manifest_sha256: str, spec: Mapping[str, Any], fmt: str = "zarr") -> Path:
    suffix = ".zarr" if fmt == "zarr" else ".h5"
    return Path(directory) / f"pose-{manifest_sha256[:12]}-{spec_hash(spec)[:12]}-{spec['model_sha256'][:12]}{suffix}"


def find_store(directory: str | os.PathLike, manifest: Any, spec_without_model: Mapping[str, Any],
               what: str, make: str) -> Path:
    """The complete pose store of ``manifest``'s clips with this spec under ``directory`` (any BlazePose model
    file): the one made for this very list, else one made for a list that holds every clip of it (a subset of
    a posed list needs no posing). :class:`CacheError` naming ``make`` (the command that builds it) when
    there is none, or several of the same rank."""
    h = spec_hash(dict(spec_without_model, model_sha256=""))[:12]
    exact = _complete(Path(directory).glob(f"pose-{manifest.sha256()[:12]}-{h}-*"))
    if len(exact) > 1:
        raise CacheError(f"several pose stores of the {what} under {directory} (made by different BlazePose models): "
                         f"{', '.join(map(str, exact))}; remove all but one")
    if exact:
        return exact[0]
    keys = set(manifest.keys())
    wider = []
    for p in _complete(Path(directory).glob(f"pose-*-{h}-*")):
        with PoseStore.open(p) as s:
            if keys <= set(s.keys()):
                wider.append(p)
    if len(wider) >= 1:
        return wider[0]
    raise CacheError(f"no complete pose store of the {what} under {directory}; build it with `{make}`")


def _complete(paths: Any) -> list[Path]:
    out = []
    for p in sorted(p for p in paths if p.suffix in (".zarr", ".h5")):
        with PoseStore.open(p) as s:
            if s.meta.get("complete"):
                out.append(p)
    return out


class PoseStore:
    """A pose store on disk (see the module docstring). ``create`` / ``open`` (``mode`` r | r+)."""

    def __init__(self, path: Path, fmt: str, handle: Any, mode: str):
        self.path, self.fmt, self._h, self.mode = Path(path), fmt, handle, mode
        self.meta = self._read_meta()
        if self.meta.get("schema") != SCHEMA:
            raise CacheError(f"{path} is not a dlkdd pose store (schema {self.meta.get('schema')!r}); "
                             f"rebuild it with `dlkdd pose`")

    @classmethod
    def create(cls, path: str | os.PathLike, keys: Sequence[str], max_rows: int, meta: Mapping[str, Any]) -> "PoseStore":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        n, meta = len(keys), dict(meta, schema=SCHEMA, complete=False)
        shapes = {"keypoints": ((n, max_rows, JOINTS, CHANNELS), "float32", 0.0), "mask": ((n, max_rows), "bool", False),
                  "rows": ((n,), "int32", 0), "frames": ((n,), "int32", 0), "done": ((n,), "bool", False)}
        if path.suffix == ".zarr":
            import zarr

            g = zarr.open_group(str(path), mode="w-", zarr_format=3)
            g.create_array("keys", shape=(n,), dtype=str, chunks=(max(n, 1),))
            if n:
                g["keys"][:] = np.asarray(list(keys), dtype=object)
            for name, (shape, dtype, fill) in shapes.items():
                g.create_array(name, shape=shape, dtype=dtype, chunks=(1,) + shape[1:], fill_value=fill)
            g.update_attributes({_META: meta})  # last: a directory without it is not a store
            g = None
        else:
            import h5py

            with h5py.File(str(path), "w-") as f:
                f.create_dataset("keys", data=np.asarray(list(keys), dtype=object), dtype=h5py.string_dtype("utf-8"))
                for name, (shape, dtype, fill) in shapes.items():
                    f.create_dataset(name, shape=shape, dtype=dtype, chunks=(1,) + shape[1:] if n else None,
                                     fillvalue=fill)
                f.attrs[_META] = json.dumps(meta)
        return cls.open(path, "r+")

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "PoseStore":
        path = Path(path)
        if not path.exists():
            raise CacheError(f"pose store not found: {path} (build it with `dlkdd pose`)")
        try:
            if path.suffix == ".zarr":
                import zarr

                return cls(path, "zarr", zarr.open_group(str(path), mode=mode, zarr_format=3), mode)
            import h5py

            return cls(path, "hdf5", h5py.File(str(path), mode), mode)
        except CacheError:
            raise
        except Exception as e:  # zarr / h5py raise many types for a foreign or damaged file
            raise CacheError(f"{path} is not a readable pose store ({type(e).__name__}: {e}); rebuild it with "
                             f"`dlkdd pose --overwrite`") from None

    def _read_meta(self) -> dict[str, Any]:
        if self.fmt == "zarr":
            return dict(self._h.attrs.asdict().get(_META) or {})
        raw = self._h.attrs.get(_META)
        return json.loads(raw) if raw is not None else {}

    def set_meta(self, **kv: Any) -> None:
        self.meta.update(kv)
        if self.fmt == "zarr":
            self._h.update_attributes({_META: self.meta})
        else:
            self._h.attrs[_META] = json.dumps(self.meta)
            self._h.flush()

    def keys(self) -> list[str]:
        return [str(k.decode() if isinstance(k, bytes) else k) for k in self._h["keys"][:].tolist()]

    def __len__(self) -> int:
        return int(self._h["done"].shape[0])

    @property
    def max_rows(self) -> int:
        return int(self._h["mask"].shape[1])

    @property
    def done(self) -> np.ndarray:
        return np.asarray(self._h["done"][:], bool)

    def write(self, i: int, keypoints: np.ndarray, mask: np.ndarray, frames: int) -> None:
        """Row ``i``: ``keypoints (r,33,4)``, ``mask (r,)`` for the first ``r`` rows; then ``done[i]``."""
        kp = np.zeros((self.max_rows, JOINTS, CHANNELS), np.float32)
        m = np.zeros((self.max_rows,), bool)
        r = len(mask)
        if r > self.max_rows or keypoints.shape != (r, JOINTS, CHANNELS):
            raise CacheError(f"{self.path}: row {i} has keypoints {keypoints.shape} for {r} rows (at most {self.max_rows})")
        kp[:r], m[:r] = keypoints, mask
        kp[~m] = 0.0
        self._h["keypoints"][i] = kp
        self._h["mask"][i] = m
        self._h["rows"][i] = r
        self._h["frames"][i] = int(frames)
        self._h["done"][i] = True  # last: a killed writer leaves the row to redo

    def read_all(self) -> dict[str, np.ndarray]:
        """Every array, in memory (a few MB for thousands of clips): ``keypoints``, ``mask``, ``rows``, ``frames``, ``done``."""
        return {k: np.asarray(self._h[k][:]) for k in ("keypoints", "mask", "rows", "frames", "done")}

    def close(self) -> None:
        if self.fmt == "hdf5" and self._h is not None:
            self._h.close()
        self._h = None

    def __enter__(self) -> "PoseStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def verify(path: str | os.PathLike, keys: Sequence[str] | None = None) -> list[str]:
    """Problems of the store at ``path`` (empty list: sound): rows not done, keys other than ``keys``,
    non-finite keypoints, keypoints where the mask says no person, masks past ``rows``, ``rows``
    inconsistent with ``frames`` and the sampling."""
    out = []
    with PoseStore.open(path) as s:
        a, stride = s.read_all(), int(s.meta.get("spec", {}).get("stride", 1))
        if keys is not None and s.keys() != list(keys):
            out.append("its clip keys differ from the list's")
        if not a["done"].all():
            out.append(f"{int((~a['done']).sum())} of {len(s)} clips not done (resume with `dlkdd pose`)")
        if not np.isfinite(a["keypoints"]).all():
            out.append("non-finite keypoints")
        if np.abs(a["keypoints"][~a["mask"]]).sum() > 0:
            out.append("keypoints in rows where no person was found")
        past = np.arange(s.max_rows)[None, :] >= a["rows"][:, None]
        if (a["mask"] & past).any():
            out.append("a person found past a clip's posed rows")
        want = np.minimum(-(-a["frames"] // stride), s.max_rows)
        bad = np.flatnonzero(a["done"] & (a["rows"] != want))
        if len(bad):
            out.append(f"rows inconsistent with the frame count and stride {stride} for {len(bad)} clip(s)")
    return out
