"""``RowFile``: read and write whole rows of a Zarr v3 array straight in its chunk files, without zarr.

zarr-python reads one row of a sharded array through its event loop (the shard index, then the
inner chunk: about 1 ms a call on this project's 2-core machine), which caps random single-clip
reads near 500 clips/s for logits + views + done. When an array's layout makes a row a plain run of
bytes at a known place, this module reads it with two ``pread`` calls instead (tens of us):

- *sharded*, as :class:`dlkdd.cache.backends._ZarrBackend` writes per-row arrays: codec
  ``sharding_indexed`` (Zarr v3 spec, "Sharding codec") with inner chunks of one row, inner codec
  ``bytes`` (little endian, no compression), index ``[bytes, crc32c]`` at the end of the shard.
  The index holds, per inner chunk, ``(offset, nbytes)`` as little-endian uint64; both
  ``2**64 - 1`` means the chunk was never written (it reads as the fill value).
- *plain*: one ``bytes`` codec (no compression); row ``j`` of chunk ``s`` is at ``j * row_bytes``.

Writing (:meth:`RowFile.write`) rebuilds each touched chunk or shard whole - the rows already there
plus the new ones - into a temporary file that is renamed over the old one, as zarr's LocalStore
does, so a reader never sees half a chunk and a killed writer leaves the old chunk; zarr's own
sharded writer spends ~0.1 ms per inner chunk (~100 ms per 512-row shard here), this ~5 ms. Only
one process may write a given chunk or shard (the precompute ranks own whole shards).

Any other layout (compressed, another chunk key encoding, a non-local store) returns ``None`` from
:meth:`RowFile.of`, and the caller reads through zarr. A missing chunk file reads as the fill value
(as in zarr); a short file or an index entry past its end raises ``ValueError`` (a damaged store).
Verification (:func:`dlkdd.cache.inspect.verify_store`) reads through zarr, which checks the index
checksum.

``read(rows int64 (B,)) -> (B, *row_shape)`` of the array's dtype; ``write(rows, data (B, *row_shape))``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RowFile"]

_EMPTY = np.uint64(2 ** 64 - 1)
_LE_BYTES = ({"name": "bytes", "configuration": {"endian": "little"}}, {"name": "bytes"})


class RowFile:
    def __init__(self, root: Path, shape: tuple[int, ...], rows_per_chunk: int, dtype: np.dtype, fill: Any,
                 sharded: bool):
        self.root, self.shape, self.rpc, self.dtype = root, shape, int(rows_per_chunk), dtype
        self.sharded, self.fill = sharded, fill
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self.suffix = ("0",) * (len(shape) - 1)

    @classmethod
    def of(cls, array: Any, store: Any) -> "RowFile | None":
        """A direct reader of ``array`` (a zarr v3 Array in the LocalStore ``store``), or None."""
        root = getattr(store, "root", None)
        if root is None or type(store).__name__ != "LocalStore":
            return None
        try:
            m = array.metadata.to_dict()
        except Exception:  # a zarr v2 array or an unexpected metadata object
            return None
        enc = m.get("chunk_key_encoding") or {}
        if enc.get("name") != "default" or (enc.get("configuration") or {}).get("separator", "/") != "/":
            return None
        shape = tuple(int(x) for x in m["shape"])
        grid = tuple(int(x) for x in m["chunk_grid"]["configuration"]["chunk_shape"])
        dtype = np.dtype(str(array.dtype))
        if not shape or grid[1:] != shape[1:] or dtype.byteorder == ">":
            return None
        codecs = [_plain(c) for c in m.get("codecs", [])]
        sharded = False
        if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
            conf = codecs[0].get("configuration", {})
            inner = [_plain(c) for c in conf.get("codecs", [])]
            index = [_plain(c) for c in conf.get("index_codecs", [])]
            if (tuple(conf.get("chunk_shape", ())) != (1, *shape[1:]) or inner[:1] != [_LE_BYTES[0]] or len(inner) != 1
                    or conf.get("index_location", "end") != "end"
                    or index != [_LE_BYTES[0], {"name": "crc32c"}]):
                return None
            sharded = True
        elif not (len(codecs) == 1 and codecs[0] in _LE_BYTES):
            return None
        return cls(Path(root) / array.path, shape, grid[0], dtype, array.fill_value, sharded)

    def _chunk(self, s: int) -> Path:
        return self.root.joinpath("c", str(s), *self.suffix)

    def read(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((rows.size, *self.shape[1:]), dtype=self.dtype)
        chunks = rows // self.rpc
        for s in np.unique(chunks):
            sel = np.flatnonzero(chunks == s)
            try:
                fd = os.open(self._chunk(int(s)), os.O_RDONLY)
            except FileNotFoundError:
                out[sel] = self.fill
                continue
            try:
                self._read_chunk(fd, int(s), rows[sel] - int(s) * self.rpc, out, sel)
            finally:
                os.close(fd)
        return out

    def _read_chunk(self, fd: int, s: int, js: np.ndarray, out: np.ndarray, sel: np.ndarray) -> None:
        size = os.fstat(fd).st_size
        if self.sharded:
            n_index = self.rpc * 16 + 4
            if size < n_index:
                raise ValueError(f"shard {self._chunk(s)} is truncated ({size} bytes)")
            index = np.frombuffer(os.pread(fd, n_index - 4, size - n_index), dtype="<u8").reshape(-1, 2)
            places = index[js]
        else:
            places = np.stack([js * self.row_bytes, np.full(js.shape, self.row_bytes)], 1).astype(np.uint64)
        for k, (off, nb) in zip(sel, places):
            if off == _EMPTY and nb == _EMPTY:
                out[k] = self.fill
                continue
            if int(nb) != self.row_bytes or int(off) + int(nb) > size:
                raise ValueError(f"chunk {self._chunk(s)} is truncated or damaged")
            out[k] = np.frombuffer(os.pread(fd, self.row_bytes, int(off)), dtype=self.dtype).reshape(out.shape[1:])


    def write(self, rows: np.ndarray, data: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        data = np.ascontiguousarray(data, dtype=self.dtype.newbyteorder("<"))
        chunks = rows // self.rpc
        for s in np.unique(chunks):
            sel = np.flatnonzero(chunks == s)
            path = self._chunk(int(s))
            try:
                old = path.read_bytes()
            except FileNotFoundError:
                old = None
            new = (self._shard if self.sharded else self._plain_chunk)(old, rows[sel] - int(s) * self.rpc, data[sel])
            path.parent.mkdir(parents=True, exist_ok=True)
            # one writer per shard (ranks own whole shards, a lock refuses a second run): a fixed temporary name,
            # so a write killed here leaves at most one stray file per shard, replaced by the next write; opened
            # with the umask's mode (as zarr's files), synced before the rename (no empty shard after a crash)
            tmp = path.with_name(f".{path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(new)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

    def _plain_chunk(self, old: bytes | None, js: np.ndarray, data: np.ndarray) -> bytes:
        n = self.rpc * self.row_bytes
        if old is not None and len(old) == n:
            buf = np.frombuffer(old, dtype=self.dtype).reshape(self.rpc, *self.shape[1:]).copy()
        else:
            buf = np.full((self.rpc, *self.shape[1:]), self.fill, dtype=self.dtype)
        buf[js] = data
        return buf.tobytes()

    def _shard(self, old: bytes | None, js: np.ndarray, data: np.ndarray) -> bytes:
        import google_crc32c

        parts: list[bytes | None] = [None] * self.rpc
        if old is not None:
            n_index = self.rpc * 16 + 4
            if len(old) < n_index:
                raise ValueError(f"cannot add rows to a truncated shard ({len(old)} bytes)")
            index = np.frombuffer(old[len(old) - n_index:-4], dtype="<u8").reshape(-1, 2)
            for j, (off, nb) in enumerate(index):
                if not (off == _EMPTY and nb == _EMPTY):
                    parts[j] = old[int(off):int(off) + int(nb)]
        for j, row in zip(js, data):
            parts[int(j)] = row.tobytes()
        index = np.full((self.rpc, 2), _EMPTY, dtype="<u8")
        body, off = [], 0
        for j, b in enumerate(parts):
            if b is not None:
                index[j] = (off, len(b))
                body.append(b)
                off += len(b)
        ib = index.tobytes()
        return b"".join(body) + ib + google_crc32c.value(ib).to_bytes(4, "little")


def _plain(codec: Any) -> dict:
    """A codec's JSON with an empty configuration dropped (zarr writes both forms)."""
    c = dict(codec) if isinstance(codec, dict) else {"name": str(codec)}
    if not c.get("configuration"):
        c.pop("configuration", None)
    return c
