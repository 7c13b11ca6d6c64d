"""Storage backends of the logit store and its JSON metadata: the few operations
:class:`dlkdd.cache.store.LogitStore` needs, one class per format (Zarr v3 directory, HDF5 file).

Also the format rules: :func:`format_for` decides the format of a new store (``--format``, else the
path's suffix, else ``cache.format``), :func:`detect_format` reads an existing store's from its
contents (never from its name), :func:`remove_store` deletes a store and nothing else, and
:func:`json_meta` keeps metadata strict JSON (nothing read from a store is ever unpickled).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Protocol, Sequence, Tuple

import numpy as np

from dlkdd.cache.rowfile import RowFile
from dlkdd.errors import CacheError
from dlkdd.hints import config_args

__all__ = ["SCHEMA_VERSION", "VIEW_PARAMS", "DTYPES", "ARRAYS", "FORMAT_SUFFIX", "STORE_SUFFIXES", "BACKENDS",
           "Backend", "Field", "rows_per_unit_for", "json_meta", "detect_format", "normalize_fmt", "format_for", "remove_store"]

SCHEMA_VERSION = 1
VIEW_PARAMS = 8  # = dlkdd.data.views.VIEW_PARAMS: start, stride, frames, y0, x0, h, w, flip
DTYPES = ("float16", "float32")
ARRAYS = ("keys", "logits", "views", "done")  # every store has these; other per-view fields are optional
SHARD_BYTES = 4 << 20  # a Zarr shard holds about this many bytes of its widest per-row array
MIN_UNITS = 64  # ... but a small store gets at least this many shards (rows per shard >= 1)
FORMAT_SUFFIX = {"zarr": ".zarr", "hdf5": ".h5"}
STORE_SUFFIXES = (".zarr", ".h5", ".hdf5")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_H5_META_ATTR = "dlkdd_meta"
_H5_ROWS_PER_CHUNK = 64


def json_meta(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """Deep-copy ``meta`` through strict JSON (no NaN, no objects), or raise naming the key."""
    for k, v in meta.items():
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise CacheError(f"{where}: metadata key {k!r} is not plain JSON ({e}); pass lists/dicts/str/numbers") from None
    return json.loads(json.dumps(meta, allow_nan=False))


def detect_format(path: str | os.PathLike) -> str:
    """``zarr`` or ``hdf5`` for an existing store, from its contents (not its name)."""
    p = Path(path)
    if not p.exists():
        raise CacheError(f"no logit cache at {p}; build it with `dlkdd cache-logits {config_args()} --teacher <ckpt>`")
    if p.is_dir():
        if (p / "zarr.json").is_file():
            return "zarr"
        raise CacheError(f"{p} is a directory but not a Zarr v3 logit store (no zarr.json)")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CacheError(f"cannot read {p}: {e}") from None
    if head == _HDF5_SIGNATURE:
        return "hdf5"
    raise CacheError(f"{p} is not a logit store (neither a Zarr directory nor an HDF5 file)")


def normalize_fmt(fmt: str) -> str:
    """``zarr`` | ``hdf5`` (``h5`` accepted)."""
    f = str(fmt).lower().lstrip(".")
    if f in ("h5", "hdf5"):
        return "hdf5"
    if f == "zarr":
        return "zarr"
    raise CacheError(f"unknown cache format {fmt!r}: use zarr or hdf5 (config key cache.format)")


def format_for(path: str | os.PathLike | None, fmt: str | None = None, default: str = "zarr") -> str:
    """The one place that decides the format of a store to be written: an explicit ``fmt``
    (``--format``), else the path's suffix (``.zarr``; ``.h5`` / ``.hdf5``), else ``default``
    (``cache.format``). An existing store's format comes from its contents: :func:`detect_format`."""
    if fmt is not None:
        return normalize_fmt(fmt)
    suf = Path(path).suffix.lower() if path is not None else ""
    if suf in (".h5", ".hdf5"):
        return "hdf5"
    if suf == ".zarr":
        return "zarr"
    return normalize_fmt(default)


# ---------------------------------------------------------------------------------------------
# backends: the few storage operations LogitStore needs, one class per format
# ---------------------------------------------------------------------------------------------
Field = Tuple[Tuple[int, ...], str]  # a per-view field: (shape of one view's value, dtype)


class Backend(Protocol):
    """What :class:`dlkdd.cache.store.LogitStore` needs from a storage format.

    A store holds ``keys`` (N,) str, ``done`` (N,) bool and one array ``(N, V, *shape)`` per named
    per-view field. ``parallel_writers``: whether several processes may write the same store at once,
    each writing whole units of :meth:`rows_per_unit` rows that no other process writes (Zarr: True;
    HDF5: False - one writer, see :mod:`dlkdd.cache.parts`).
    """

    fmt: str
    parallel_writers: bool

    @classmethod
    def create(cls, path: Path, keys: Sequence[str], views: int, fields: dict[str, Field], rows_per_unit: int,
               meta: dict[str, Any]) -> "Backend": ...

    @classmethod
    def open(cls, path: Path, mode: str) -> "Backend": ...

    def meta(self) -> dict[str, Any]: ...

    def set_meta(self, kv: dict[str, Any]) -> None: ...

    def keys(self) -> list[str]: ...

    def names(self) -> list[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def dtype(self, name: str) -> str: ...

    def has(self, name: str) -> bool: ...

    def rows_per_unit(self) -> int: ...

    def read(self, name: str, idx: Any) -> np.ndarray: ...

    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray: ...

    def write_rows(self, name: str, rows: np.ndarray, data: np.ndarray) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def rows_per_unit_for(n: int, row_bytes: int) -> int:
    """Rows per Zarr shard: about :data:`SHARD_BYTES` of the widest per-row array, but at least
    :data:`MIN_UNITS` shards for a small store (so that up to that many ranks all get work)."""
    by_size = max(1, SHARD_BYTES // max(1, int(row_bytes)))
    by_count = max(1, -(-int(n) // MIN_UNITS))
    return int(min(by_size, by_count))


class _ZarrBackend:
    """Zarr v3 directory. Per-row arrays are sharded by ``rows_per_unit`` rows (one file per shard)
    with one inner chunk per row, uncompressed, so that a reader fetches one row's bytes; ``done`` is
    chunked by the same rows. Writers of disjoint shards never touch the same file."""

    fmt = "zarr"
    parallel_writers = True

    def __init__(self, group: Any):
        self.g = group
        self.arrays = {name: group[name] for name in group.array_keys()}
        self._direct = {name: RowFile.of(a, self.g.store) for name, a in self.arrays.items() if name != "keys"}

    @classmethod
    def create(cls, path: Path, keys: Sequence[str], views: int, fields: dict[str, Field], rows_per_unit: int,
               meta: dict[str, Any]) -> "_ZarrBackend":
        import zarr

        N, R = len(keys), max(1, int(rows_per_unit))
        g = zarr.open_group(str(path), mode="w-", zarr_format=3)
        k = g.create_array("keys", shape=(N,), dtype=str, chunks=(max(N, 1),))
        if N:
            k[:] = np.asarray(list(keys), dtype=object)
        for name, (shape, dtype) in fields.items():
            full = (views, *shape)
            g.create_array(name, shape=(N, *full), dtype=dtype, chunks=(1, *full), shards=(R, *full),
                           fill_value=np.nan, compressors=None)
        g.create_array("done", shape=(N,), dtype="bool", chunks=(R,), fill_value=False, compressors=None)
        # metadata last (a store without schema_version is not a store), in ONE write of zarr.json:
        # ``g.attrs.update`` is MutableMapping.update, one whole-file write per key, so a kill
        # between keys would leave half-updated metadata
        g.update_attributes(meta)
        return cls(g)

    @classmethod
    def open(cls, path: Path, mode: str) -> "_ZarrBackend":
        import zarr

        try:
            g = zarr.open_group(str(path), mode=mode, zarr_format=3)
        except Exception as e:  # zarr raises several types for a bad/foreign directory
            raise CacheError(f"{path} is not a readable Zarr v3 logit store: {e}") from None
        return cls(g)

    def meta(self) -> dict[str, Any]:
        return dict(self.g.attrs.asdict())

    def set_meta(self, kv: dict[str, Any]) -> None:
        self.g.update_attributes(kv)  # one atomic write (temporary file + rename) for all keys

    def keys(self) -> list[str]:
        return [str(k) for k in self.arrays["keys"][:].tolist()]

    def names(self) -> list[str]:
        return list(self.arrays)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.arrays[name].shape)

    def dtype(self, name: str) -> str:
        return str(self.arrays[name].dtype)

    def has(self, name: str) -> bool:
        return name in self.arrays

    def rows_per_unit(self) -> int:
        rpu = 1
        for name, a in self.arrays.items():
            if name != "keys":  # written once, at creation
                rpu = math.lcm(rpu, int((getattr(a, "shards", None) or a.chunks)[0]))
        return rpu

    def read(self, name: str, idx: Any) -> np.ndarray:
        return np.asarray(self.arrays[name][idx])

    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        direct = self._direct.get(name)
        if direct is not None:  # a few rows of a row-addressable array: read their bytes only
            return direct.read(rows)
        run = _as_run(rows)
        return np.asarray(self.arrays[name][run] if run is not None else self.arrays[name].oindex[rows])

    def write_rows(self, name: str, rows: np.ndarray, data: np.ndarray) -> None:
        direct = self._direct.get(name)
        if direct is not None:  # rebuild each touched shard whole (see dlkdd.cache.rowfile)
            direct.write(rows, data)
            return
        # one slice per run of consecutive rows (zarr 3.1's orthogonal writes into sharded arrays fail)
        order = np.argsort(rows, kind="stable")
        rows, data = rows[order], data[order]
        cuts = np.flatnonzero(np.diff(rows) != 1) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, rows.size]):
            self.arrays[name][int(rows[lo]):int(rows[hi - 1]) + 1] = data[lo:hi]

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.arrays = {}
        self._direct = {}


class _H5Backend:
    """One HDF5 file, chunks of up to 64 rows; one writer at a time."""

    fmt = "hdf5"
    parallel_writers = False

    def __init__(self, f: Any):
        self.f = f

    @classmethod
    def create(cls, path: Path, keys: Sequence[str], views: int, fields: dict[str, Field], rows_per_unit: int,
               meta: dict[str, Any]) -> "_H5Backend":
        import h5py

        N = len(keys)
        rows = max(1, min(N, _H5_ROWS_PER_CHUNK))
        f = h5py.File(str(path), "w-")
        try:
            f.create_dataset("keys", data=np.asarray(list(keys), dtype=object), shape=(N,),
                             dtype=h5py.string_dtype("utf-8"))
            for name, (shape, dtype) in fields.items():
                f.create_dataset(name, shape=(N, views, *shape), dtype=dtype, chunks=(rows, views, *shape),
                                 fillvalue=np.nan)
            f.create_dataset("done", shape=(N,), dtype="bool", chunks=(max(1, min(N, 4096)),), fillvalue=False)
            f.attrs[_H5_META_ATTR] = json.dumps(meta)
            f.flush()
        except BaseException:
            f.close()
            raise
        return cls(f)

    @classmethod
    def open(cls, path: Path, mode: str) -> "_H5Backend":
        import h5py

        try:
            f = h5py.File(str(path), mode)
        except OSError as e:
            raise CacheError(f"cannot open HDF5 logit store {path}: {str(e).splitlines()[0] if str(e) else e}. "
                             "Another process may be writing it; if none is, the file is damaged (e.g. killed "
                             "mid-write): rebuild it with `dlkdd cache-logits ... --overwrite`") from None
        return cls(f)

    def meta(self) -> dict[str, Any]:
        raw = self.f.attrs.get(_H5_META_ATTR)
        if raw is None:
            return {}
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        try:
            out = json.loads(str(raw))
        except json.JSONDecodeError as e:
            raise CacheError(f"{self.f.filename}: metadata is not valid JSON ({e})") from None
        if not isinstance(out, dict):
            raise CacheError(f"{self.f.filename}: metadata is not a JSON object")
        return out

    def set_meta(self, kv: dict[str, Any]) -> None:
        m = self.meta()
        m.update(kv)
        self.f.attrs[_H5_META_ATTR] = json.dumps(m)
        self.f.flush()

    def keys(self) -> list[str]:
        return [str(k) for k in self.f["keys"].asstr()[:].tolist()]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.f[name].shape)

    def names(self) -> list[str]:
        return list(self.f.keys())

    def dtype(self, name: str) -> str:
        return str(self.f[name].dtype)

    def has(self, name: str) -> bool:
        return name in self.f

    def rows_per_unit(self) -> int:
        return 1  # one writer: the unit of a rank's share does not matter

    def read(self, name: str, idx: Any) -> np.ndarray:
        return np.asarray(self.f[name][idx])

    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        run = _as_run(rows)
        if run is not None:  # a slice is much faster than h5py point selection
            return np.asarray(self.f[name][run])
        # h5py fancy indexing needs increasing, unique indices
        uniq, inv = np.unique(rows, return_inverse=True)
        return np.asarray(self.f[name][uniq])[inv]

    def write_rows(self, name: str, rows: np.ndarray, data: np.ndarray) -> None:
        order = np.argsort(rows)
        self.f[name][rows[order]] = data[order]

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        try:
            self.f.close()
        except Exception:  # pragma: no cover - already closed
            pass


def _as_run(rows: np.ndarray) -> slice | None:
    """``rows`` as a slice when they are consecutive increasing indices, else None."""
    if rows.size and (rows.size == 1 or bool(np.all(np.diff(rows) == 1))):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return None


BACKENDS: dict[str, type[Backend]] = {"zarr": _ZarrBackend, "hdf5": _H5Backend}


def remove_store(p: str | os.PathLike) -> None:
    """Delete an existing store (``overwrite``) - but never an unrelated file or directory."""
    p = Path(p)
    if p.is_symlink():
        p.unlink()
        return
    try:
        detect_format(p)
    except CacheError:
        if p.is_dir() and not any(p.iterdir()):
            p.rmdir()
            return
        raise CacheError(f"{p} exists and is not a logit store; refusing to overwrite it - choose another path") from None
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink()
