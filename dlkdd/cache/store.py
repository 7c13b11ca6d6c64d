"""The offline logit cache: one store of teacher logits per (teacher, manifest, view spec).

A store is a Zarr v3 directory (``*.zarr``, default) or an HDF5 file (``*.h5``) holding, for
N clips, V stored views per clip, ``keys`` and ``done`` and one array per named per-view field
(:attr:`LogitStore.fields`, ``{name: (shape of one view's value, dtype)}``):

    keys      (N,)      str      manifest keys (``Jump/Jump_8_3``), in manifest order, unique
    done      (N,)      bool     row i fully written (set only after its data)
    logits    (N,V,C)   float16 | float32   raw pre-softmax teacher logits (tau chosen later)
    views     (N,V,P)   float64  the view each logit row was computed on (P = 8,
                                 :meth:`dlkdd.data.views.View.to_array`), replayable exactly
    features  (N,V,D)   float16 | float32   optional teacher features (``feature_dim > 0``)
    <name>    (N,V,...) float16 | float32 | float64   any other field given to :meth:`LogitStore.create`

plus JSON metadata (``schema_version``, ``teacher_sha256``, ``manifest_sha256``, ``classes``,
``num_classes``, ``views_per_clip``, ``clip``, ``view_seed``, ``dtype``, ``fields``, ``complete``, ...).
Metadata is JSON only: Zarr group attributes, or one JSON string attribute ``dlkdd_meta`` in
HDF5. Nothing read from a store is ever unpickled or evaluated. The fields are read from the
arrays themselves, so stores written before ``fields`` was recorded open the same way.

Layout and concurrency
----------------------
Zarr (:class:`dlkdd.cache.backends._ZarrBackend`): every per-view array is sharded by
:attr:`LogitStore.rows_per_chunk` = R rows (Zarr v3 ``sharding_indexed``: one file per shard,
about 4 MiB of the widest array, but at least 64 shards for a small store), with one inner chunk
per row, uncompressed; ``done`` is chunked by the same R rows. 100,000 clips x 10 views x 400
classes are ~600 files (3 per clip before). Rows are read and written by their bytes
(:mod:`dlkdd.cache.rowfile`): a reader fetches one row, never a whole shard; a writer rebuilds each
touched shard whole into a temporary file renamed into place (atomic), so a reader or a killed
writer never sees half a shard. Processes that write *disjoint shards* never touch the same file
- the precompute ranks get whole shards (:func:`dlkdd.cache.parts.shard_rows`), and the ``done``
chunk of a shard's rows belongs to the same rank. Row data is written before ``done[i]``, so a
writer killed mid-write leaves ``done[i] = False`` and the row is recomputed on resume; a shard is
rebuilt from the same rows in row order, so a resumed store has the same bytes as an
uninterrupted one. Stores of the earlier one-row-per-chunk layout (zstd-compressed) are read
and resumed through zarr. Metadata (``set_meta``/``mark_complete``) must be written by one
coordinating process only.

HDF5: a single writer (HDF5 without SWMR does not allow concurrent writers, nor readers while
a writer has the file open); chunks of up to 64 rows; the file is flushed after every
``write``/``write_many``, so a killed writer loses at most the row being written.

Readers (e.g. in DataLoader workers after ``fork``) open the file lazily in each process: the
store remembers the pid that opened it and re-opens in a child, so no h5py handle or zarr
event loop is shared across ``fork``; pickling (spawn) carries only the path and mode.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dlkdd.cache.backends import (ARRAYS, BACKENDS, DTYPES, SCHEMA_VERSION, VIEW_PARAMS, Field, detect_format,
                                  format_for, json_meta, remove_store, rows_per_unit_for)
from dlkdd.errors import CacheError
from dlkdd.hints import config_args

__all__ = ["LogitStore", "StoreLayout", "SCHEMA_VERSION", "VIEW_PARAMS", "detect_format"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreLayout:
    """How a new store holds its per-view fields (:meth:`LogitStore.create`): ``dtype`` of the logits
    (and features), ``feature_dim`` D (0: no ``features`` field), ``view_params`` P, any other
    ``fields`` (``{name: (per-view shape, float dtype)}``, e.g. ``{"topk": ((5,), "float32")}``) and
    ``rows_per_chunk`` (rows per Zarr shard; None: :func:`dlkdd.cache.backends.rows_per_unit_for`)."""

    dtype: str = "float16"
    feature_dim: int = 0
    view_params: int = VIEW_PARAMS
    fields: Mapping[str, Field] | None = None
    rows_per_chunk: int | None = None


class LogitStore:
    """A logit store on disk; see the module docstring for layout and guarantees.

    Build with :meth:`create` (opened for writing) or :meth:`open` (``mode="r"`` or ``"r+"``).
    The file is opened lazily in each process, so a read-only store can be handed to
    DataLoader workers (fork or spawn).
    """

    def __init__(self, path: str | os.PathLike, mode: str = "r", fmt: str | None = None):
        if mode not in ("r", "r+"):
            raise CacheError(f"LogitStore mode must be 'r' or 'r+', got {mode!r}")
        self._path = Path(path)
        self._mode = mode
        self._fmt = fmt or detect_format(self._path)
        self._backend: Any = None
        self._pid: int | None = None
        self._meta: dict[str, Any] | None = None
        self._keys: list[str] | None = None
        self._index: dict[str, int] | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._dtypes: dict[str, str] = {}
        self._backend_now()  # open once now so that errors surface at open time

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, keys: Sequence[str], views_per_clip: int, num_classes: int,
               meta: dict[str, Any] | None = None, layout: StoreLayout = StoreLayout(), fmt: str | None = None,
               overwrite: bool = False) -> "LogitStore":
        """Create an empty store for ``keys`` (manifest order) and return it opened ``r+``.

        Its per-view fields (``layout``: :class:`StoreLayout`) are ``logits`` ``(C,)`` of ``layout.dtype``,
        ``views`` ``(P,)`` float64, ``features`` ``(D,)`` of ``layout.dtype`` when ``layout.feature_dim > 0``,
        and any ``layout.fields``.

        ``meta`` (JSON only) is stored as given, plus ``schema_version``, ``num_clips``,
        ``num_classes``, ``views_per_clip``, ``view_params``, ``feature_dim``, ``dtype``, ``fields``,
        ``complete=False``, ``created`` and ``dlkdd_version`` (set here, overriding ``meta``).
        Raises :class:`CacheError` if ``path`` exists (unless ``overwrite``), for duplicate or
        empty keys, a bad dtype or field, or ``meta["classes"]`` not of length ``num_classes``.
        """
        from dlkdd import __version__

        p = Path(path)
        fmt_ = format_for(p, fmt)
        keys = [str(k) for k in keys]
        V, C, P, D = int(views_per_clip), int(num_classes), int(layout.view_params), int(layout.feature_dim)
        dtype, fields, rows_per_chunk = layout.dtype, layout.fields, layout.rows_per_chunk
        if dtype not in DTYPES:
            raise CacheError(f"cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r} (config key cache.dtype)")
        if V < 1 or C < 1 or P < 1 or D < 0:
            raise CacheError(f"{p}: need views_per_clip >= 1, num_classes >= 1, view_params >= 1, feature_dim >= 0; "
                             f"got {V}, {C}, {P}, {D}")
        if any(not k for k in keys):
            raise CacheError(f"{p}: empty key in the key list")
        if len(set(keys)) != len(keys):
            seen: set[str] = set()
            dup = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            raise CacheError(f"{p}: duplicate key {dup!r}; store keys must be unique (check the manifest)")
        all_fields = _fields_of(p, C, P, D, dtype, fields)
        meta = json_meta(dict(meta or {}), str(p))
        if "classes" in meta and len(meta["classes"]) != C:
            raise CacheError(f"{p}: meta['classes'] has {len(meta['classes'])} names but num_classes={C}")
        meta.update(
            schema_version=SCHEMA_VERSION, num_clips=len(keys), num_classes=C, views_per_clip=V, view_params=P,
            feature_dim=D, dtype=dtype, complete=False,
            fields={n: {"shape": list(shp), "dtype": dt} for n, (shp, dt) in all_fields.items()},
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), dlkdd_version=__version__,
        )
        meta.setdefault("skipped_keys", [])
        if p.exists() or p.is_symlink():
            if not overwrite:
                raise CacheError(f"{p} already exists; pass overwrite=True (or delete it) to rebuild the cache")
            remove_store(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        row_bytes = max(V * int(np.prod(shp, dtype=np.int64)) * np.dtype(dt).itemsize for shp, dt in all_fields.values())
        rpc = int(rows_per_chunk) if rows_per_chunk else rows_per_unit_for(len(keys), row_bytes)
        backend = BACKENDS[fmt_].create(p, keys, V, all_fields, rpc, meta)
        backend.close()
        log.info("created %s logit store %s: %d clips x %d views x %d classes (%s)", fmt_, p, len(keys), V, C, dtype)
        return cls(p, mode="r+", fmt=fmt_)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "LogitStore":
        """Open an existing store; :class:`CacheError` if missing, not a store, or of a newer schema."""
        return cls(path, mode=mode)

    # ---- per-process lazy handle -----------------------------------------------------------
    def _backend_now(self) -> Any:
        pid = os.getpid()
        if self._backend is not None and self._pid == pid:
            return self._backend
        # a handle inherited across fork is dropped without closing (the parent still owns it)
        self._backend = None
        try:
            backend = BACKENDS[self._fmt].open(self._path, self._mode)
        except CacheError:
            raise
        except Exception as e:  # a damaged file or metadata: name it as such, with the fix
            raise self.damaged("cannot open it", e) from None
        try:
            meta = backend.meta()
            self._check_schema(meta)
            missing = [a for a in ARRAYS if not backend.has(a)]
            if missing:
                raise CacheError(f"{self._path}: logit store lacks array(s) {', '.join(missing)}; rebuild it")
            self._shapes = {a: backend.shape(a) for a in backend.names()}
            self._dtypes = {a: backend.dtype(a) for a in backend.names()}
        except CacheError:
            backend.close()
            raise
        except Exception as e:
            backend.close()
            raise self.damaged("unreadable metadata or keys", e) from None
        except BaseException:
            backend.close()
            raise
        self._meta = meta
        self._backend, self._pid = backend, pid
        return backend

    def damaged(self, what: str, err: BaseException | None = None) -> CacheError:
        """The one "this store is damaged" error: the store, what failed, and the command that rebuilds it."""
        detail = f" ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else 'no detail'})" if err else ""
        teacher = (self._meta or {}).get("teacher_path") or "TEACHER.pt"
        return CacheError(f"{self._path}: logit store damaged: {what}{detail}; rebuild it with `dlkdd cache-logits "
                          f"{config_args()} --teacher {teacher} --out {self._path} --overwrite`")

    def _read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows of one array; a read failure (truncated/corrupt chunk, a bit flip in a shard's crc32c-checked
        index) is :meth:`damaged`. Row bytes themselves carry no checksum: a flipped bit there reads as a
        finite number (NaN/inf are caught by the callers)."""
        try:
            return self._backend_now().read_rows(name, rows)
        except CacheError:
            raise
        except Exception as e:
            raise self.damaged(f"unreadable {name} chunk in rows {rows.tolist()[:5]}", e) from None

    def _check_finite(self, name: str, a: np.ndarray, rows: np.ndarray) -> None:
        """Done rows are finite by construction (writes refuse NaN/inf): NaN there is a missing chunk
        (read as the fill value) or damaged data."""
        ok = np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1) if a.size else np.ones(a.shape[0], bool)
        if not ok.all():
            keys = self.keys
            bad = [keys[int(r)] for r in rows[~ok][:5]]
            raise self.damaged(f"missing or unreadable {name} chunk for {int((~ok).sum())} clip(s) {bad}")

    def _check_schema(self, meta: dict[str, Any]) -> None:
        if "schema_version" not in meta:
            raise CacheError(f"{self._path} is not a dlkdd logit store (no schema_version in its metadata)")
        v = meta["schema_version"]
        if not isinstance(v, int) or v < 1:
            raise CacheError(f"{self._path}: invalid schema_version {v!r}")
        if v > SCHEMA_VERSION:
            raise CacheError(f"{self._path} was written by a newer dlkdd (cache schema {v} > {SCHEMA_VERSION}); "
                             f"upgrade dlkdd or rebuild the cache")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_backend"] = None
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # ---- properties ------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def fmt(self) -> str:
        return self._fmt

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def meta(self) -> dict[str, Any]:
        """A copy of the metadata (as of opening / the last ``set_meta``; see :meth:`refresh`)."""
        self._backend_now()
        return json.loads(json.dumps(self._meta))

    def refresh(self) -> None:
        """Re-read the metadata from disk (another process may have changed it)."""
        self._meta = self._backend_now().meta()

    @property
    def keys(self) -> list[str]:
        if self._keys is None:
            b = self._backend_now()
            try:
                self._keys = b.keys()
            except Exception as e:
                raise self.damaged("unreadable keys array", e) from None
        return list(self._keys)

    @property
    def num_clips(self) -> int:
        self._backend_now()
        return int(self._shapes["logits"][0])

    @property
    def views_per_clip(self) -> int:
        self._backend_now()
        return int(self._shapes["logits"][1])

    @property
    def num_classes(self) -> int:
        self._backend_now()
        return int(self._shapes["logits"][2])

    @property
    def view_params(self) -> int:
        self._backend_now()
        return int(self._shapes["views"][2])

    @property
    def feature_dim(self) -> int:
        self._backend_now()
        return int(self._shapes["features"][2]) if "features" in self._shapes else 0

    @property
    def fields(self) -> dict[str, Field]:
        """The per-view fields ``{name: (shape of one view's value, dtype)}``: ``logits``, ``views``,
        and ``features`` or any other field the store was created with (read from the arrays)."""
        self._backend_now()
        n, v = self._shapes["logits"][:2]
        return {a: (tuple(shp[2:]), self._dtypes[a]) for a, shp in self._shapes.items()
                if a not in ("keys", "done") and len(shp) >= 2 and shp[:2] == (n, v)}

    @property
    def parallel_writers(self) -> bool:
        """Whether several processes may write disjoint :attr:`rows_per_chunk` units at once (Zarr)."""
        return bool(type(self._backend_now()).parallel_writers)

    @property
    def dtype(self) -> str:
        return str(self.meta.get("dtype", "float16"))

    @property
    def done(self) -> np.ndarray:
        """bool (N,), re-read from disk on every access."""
        b = self._backend_now()
        try:
            return b.read("done", slice(None)).astype(bool, copy=False)
        except Exception as e:
            raise self.damaged("unreadable done array", e) from None

    @property
    def is_complete(self) -> bool:
        """True when the ``complete`` flag is set (set only after every row was done)."""
        self._backend_now()
        return bool(self._meta.get("complete", False))

    def missing_indices(self) -> np.ndarray:
        """Row indices not written yet (int64), for resuming a precompute."""
        return np.flatnonzero(~self.done)

    # ---- lookup ----------------------------------------------------------------------------
    def index_of(self, key: str) -> int:
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.keys)}
        try:
            return self._index[key]
        except KeyError:
            raise CacheError(f"key {key!r} is not in logit store {self._path}; "
                             f"the store was built for another manifest - rebuild it") from None

    # ---- writing ---------------------------------------------------------------------------
    @property
    def rows_per_chunk(self) -> int:
        """Rows per storage unit (Zarr shard or chunk) of the per-row arrays: processes that write
        disjoint sets of whole units never touch the same file. 1 for HDF5 (one writer)."""
        return int(self._backend_now().rows_per_unit())

    def _require_writable(self) -> None:
        if self._mode != "r+":
            raise CacheError(f"logit store {self._path} is open read-only; open it with mode='r+' to write")

    def _check_rows(self, idx: np.ndarray) -> None:
        n = self.num_clips
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise CacheError(f"{self._path}: row index out of range [0, {n}): {idx.tolist()}")
        if len(np.unique(idx)) != idx.size:
            raise CacheError(f"{self._path}: repeated row index in one write: {idx.tolist()}")

    def _prep(self, name: str, a: Any, shape: tuple[int, ...], dtype: str, rows: np.ndarray) -> np.ndarray:
        arr = np.asarray(_np(a))
        if arr.shape != shape:
            raise CacheError(f"{self._path}: {name} must have shape {shape}, got {arr.shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr.astype(dtype)
        finite = np.isfinite(out).reshape(shape[0], -1).all(axis=1)
        if not finite.all():
            keys = self.keys
            bad = [keys[int(r)] for r in rows[~finite][:5]]
            raise CacheError(f"{self._path}: non-finite {name} for {bad} (after casting to {dtype}; "
                             f"a float16 cache overflows above 65504 - use cache.dtype=float32)")
        return out

    def write(self, i: int, logits: Any, views: Any, features: Any = None) -> None:
        """Write row ``i``: logits (V,C), views (V,P), optional features (V,D); then ``done[i]``."""
        self.write_many([int(i)], np.asarray(_np(logits))[None], np.asarray(_np(views))[None],
                        None if features is None else np.asarray(_np(features))[None])

    def write_many(self, indices: Sequence[int] | np.ndarray, logits: Any, views: Any, features: Any = None) -> None:
        """Write rows ``indices``: logits (B,V,C), views (B,V,P), features (B,V,D); then their ``done``."""
        data = {"logits": logits, "views": views}
        if features is not None:
            if "features" not in self.fields:
                raise CacheError(f"{self._path}: store has no features array (created with feature_dim=0)")
            data["features"] = features
        elif "features" in self.fields:
            raise CacheError(f"{self._path}: store expects features (feature_dim={self.feature_dim}); pass features=")
        self.write_fields(indices, data)

    def write_fields(self, indices: Sequence[int] | np.ndarray, data: dict[str, Any]) -> None:
        """Write rows ``indices``: one array ``(B, V, *shape)`` per field of :attr:`fields` (all of them),
        then their ``done``. Non-finite values (after the cast to the field's dtype) are refused with
        :class:`CacheError`. A Zarr writer should own the whole :attr:`rows_per_chunk` units it writes."""
        self._require_writable()
        b = self._backend_now()
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices, dtype=np.int64).reshape(-1)
        self._check_rows(idx)
        fields = self.fields
        extra, missing = sorted(set(data) - set(fields)), sorted(set(fields) - set(data))
        if extra or missing:
            raise CacheError(f"{self._path}: the store's fields are {sorted(fields)}; got {sorted(data)} "
                             f"(missing {missing}, unknown {extra})")
        B, V = idx.size, self.views_per_clip
        arrays = {n: self._prep(n, data[n], (B, V, *shp), dt, idx) for n, (shp, dt) in fields.items()}
        if B == 0:
            return
        try:
            for n, a in arrays.items():
                b.write_rows(n, idx, a)
        except ValueError as e:  # a truncated shard to add rows to
            raise self.damaged("cannot add rows to it", e) from e
        b.flush()
        b.write_rows("done", idx, np.ones(B, dtype=bool))  # done strictly after the data
        b.flush()

    def set_meta(self, **kv: Any) -> None:
        """Update metadata keys (JSON only). One coordinating process only."""
        self._require_writable()
        if "schema_version" in kv and kv["schema_version"] != SCHEMA_VERSION:
            raise CacheError(f"{self._path}: schema_version is fixed at {SCHEMA_VERSION}")
        kv = json_meta(kv, str(self._path))
        b = self._backend_now()
        b.set_meta(kv)
        self._meta = b.meta()

    def mark_complete(self) -> None:
        """Set ``complete=True`` - only after checking that every row is done (else CacheError)."""
        self._require_writable()
        done = self.done
        if not done.all():
            miss = np.flatnonzero(~done)
            keys = self.keys
            shown = ", ".join(keys[int(r)] for r in miss[:5]) + (" ..." if miss.size > 5 else "")
            raise CacheError(f"{self._path}: {miss.size} of {done.size} clips have no logits yet ({shown}); "
                             f"resume `dlkdd cache-logits` to fill them before marking the store complete")
        self.set_meta(complete=True)

    # ---- reading ---------------------------------------------------------------------------
    def _check_done(self, rows: np.ndarray) -> None:
        if self._mode == "r" and self._backend_now() is not None and self._meta.get("complete"):
            return  # complete is set only once every row is done; a lost row still reads as NaN (_check_finite)
        d = self._read_rows("done", rows) if rows.size else np.ones(0, bool)
        if not np.all(d):
            bad = rows[~np.asarray(d, dtype=bool)]
            keys = self.keys
            raise CacheError(f"{self._path}: no logits stored yet for {[keys[int(r)] for r in bad[:5]]}; "
                             f"finish `dlkdd cache-logits` first")

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(logits float32 (V,C), views float64 (V,P)) of row ``i``; CacheError if not written."""
        lg, vw = self.read_many([int(i)])
        return lg[0], vw[0]

    def read_key(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        return self.read(self.index_of(key))

    def read_many(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits float32 (B,V,C), views float64 (B,V,P)) of rows ``indices``."""
        f = self.read_fields(indices, ("logits", "views"))
        return f["logits"], f["views"]

    def read_fields(self, indices: Sequence[int] | np.ndarray, names: Sequence[str] | None = None,
                    raw: bool = False) -> dict[str, np.ndarray]:
        """``{name: (B, V, *shape)}`` of rows ``indices`` for ``names`` (default: every field); float16
        is returned as float32 unless ``raw`` (the stored dtype). CacheError if a row is not written."""
        fields = self.fields
        names = list(fields) if names is None else list(names)
        for n in names:
            if n not in fields:
                what = " (built with cache.features=false)" if n == "features" else ""
                raise CacheError(f"{self._path} holds no teacher {n}{what}; its fields are {sorted(fields)}")
        rows = self._rows(indices)
        self._check_done(rows)
        out = {}
        for n in names:
            a = self._read_rows(n, rows)
            self._check_finite(n, a, rows)
            out[n] = a if raw or a.dtype != np.float16 else a.astype(np.float32)
        return out

    def read_all(self) -> tuple[np.ndarray, np.ndarray]:
        """All rows: (logits float32 (N,V,C), views float64 (N,V,P)); CacheError if any is missing."""
        return self.read_many(np.arange(self.num_clips))

    def read_features(self, i: int) -> np.ndarray:
        """Features float32 (V,D) of row ``i``; CacheError if the store has none."""
        return self.read_fields([int(i)], ("features",))["features"][0].astype(np.float32, copy=False)

    def _rows(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self.num_clips
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise CacheError(f"{self._path}: row index out of range [0, {n}): {rows.tolist()[:10]}")
        return np.where(rows < 0, rows + n, rows)

    def read_raw(self, name: str) -> np.ndarray:
        """A whole array as stored (no done check, no cast) - for inspection / verification."""
        b = self._backend_now()
        if name == "keys":
            return np.asarray(b.keys(), dtype=object)
        if not b.has(name):
            raise CacheError(f"{self._path} has no array {name!r}")
        return b.read(name, slice(None))

    # ---- life cycle ------------------------------------------------------------------------
    def close(self) -> None:
        if self._backend is not None and self._pid == os.getpid():
            self._backend.close()
        self._backend = None
        self._pid = None

    def __enter__(self) -> "LogitStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_clips

    def __repr__(self) -> str:
        return (f"LogitStore({str(self._path)!r}, fmt={self._fmt}, mode={self._mode!r}, "
                f"clips={self.num_clips}, views={self.views_per_clip}, classes={self.num_classes})")


def _np(a: Any) -> Any:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else a


_RESERVED = ("keys", "done")
_FIELD_DTYPES = ("float16", "float32", "float64")


def _fields_of(p: Path, C: int, P: int, D: int, dtype: str, extra: dict[str, Field] | None) -> dict[str, Field]:
    """The per-view fields of a new store: logits, views, features (``D > 0``), then ``extra``."""
    fields: dict[str, Field] = {"logits": ((C,), dtype), "views": ((P,), "float64")}
    if D:
        fields["features"] = ((D,), dtype)
    for name, spec in (extra or {}).items():
        try:
            shape, dt = tuple(int(x) for x in spec[0]), str(spec[1])
        except (TypeError, ValueError, IndexError):
            raise CacheError(f"{p}: field {name!r} must be (per-view shape, dtype), got {spec!r}") from None
        if not str(name).isidentifier() or name in _RESERVED or name in fields:
            raise CacheError(f"{p}: bad or repeated field name {name!r} (reserved: keys, done, logits, views, features)")
        if dt not in _FIELD_DTYPES or any(x < 1 for x in shape):
            raise CacheError(f"{p}: field {name!r}: dtype must be one of {', '.join(_FIELD_DTYPES)} and every "
                             f"size >= 1, got {shape} {dt}")
        fields[str(name)] = (shape, dt)
    return fields
