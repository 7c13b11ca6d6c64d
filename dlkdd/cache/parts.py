"""Writing one store from several processes: row sharding and the HDF5 part stores.

- :func:`shard_rows`: each rank's share of the rows still to score - whole storage units
  (:attr:`dlkdd.cache.store.LogitStore.rows_per_chunk`) dealt round-robin, no padding - so ranks
  writing a Zarr store never write the same chunk or shard.
- HDF5 has a single writer, so under ``torchrun`` each rank writes its rows into its own Zarr part
  store ``<store>.h5.parts/rank<r>.zarr`` (:func:`parts_dir`); after a barrier rank 0 copies the
  parts' done rows into the ``.h5`` and removes them (:func:`merge_parts`). Parts left by a killed
  run are merged first on the next run, so nothing already scored is lost.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlkdd.cache.store import LogitStore
from dlkdd.errors import CacheError

log = logging.getLogger(__name__)

__all__ = ["shard_rows", "parts_dir", "merge_parts"]


def shard_rows(rows: Sequence[int], rank: int, world_size: int, rows_per_chunk: int = 1) -> list[int]:
    """Rank ``rank``'s share of ``rows``: whole chunks (``row // rows_per_chunk``), dealt round-robin
    in order of first appearance, without padding. The shares are disjoint, cover ``rows`` exactly,
    and no chunk is split between ranks (with one row per chunk: ``rows[rank::world_size]``)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, {world_size})")
    rpc = max(1, int(rows_per_chunk))
    owner: dict[int, int] = {}
    mine = []
    for r in rows:
        c = int(r) // rpc
        if c not in owner:
            owner[c] = len(owner) % world_size
        if owner[c] == rank:
            mine.append(int(r))
    return mine


def parts_dir(path: str | Path) -> Path:
    """Where the ranks of a distributed HDF5 precompute write their part stores: ``<store>.parts/``."""
    p = Path(path)
    return p.with_name(p.name + ".parts")


def merge_parts(store: Any, block: int = 256) -> int:
    """Copy the done rows of every part store under :func:`parts_dir` into ``store`` (open ``r+``),
    then delete the parts. Parts that do not match the store (other keys, teacher, views, classes)
    or cannot be read are discarded with a warning. Returns the number of rows copied."""
    pdir = parts_dir(store.path)
    if not pdir.is_dir():
        return 0
    copied = 0
    done = store.done
    meta = store.meta
    for part in sorted(pdir.glob("rank*.zarr")):
        try:
            with LogitStore.open(part) as ps:
                pm = ps.meta
                same = (ps.keys == store.keys and ps.views_per_clip == store.views_per_clip
                        and ps.fields == store.fields
                        and all(pm.get(x) == meta.get(x) for x in ("teacher_sha256", "manifest_sha256", "view_seed")))
                if not same:
                    log.warning("discarding %s: it was written for another store", part)
                    continue
                rows = np.flatnonzero(ps.done & ~done)
                for j in range(0, rows.size, block):
                    r = rows[j:j + block]
                    store.write_fields(r, ps.read_fields(r, raw=True))  # every field, in its stored dtype
                done[rows] = True
                copied += int(rows.size)
        except CacheError as e:
            log.warning("discarding unreadable part %s: %s", part, e)
    shutil.rmtree(pdir)
    if copied:
        log.info("merged %d rows from the rank part stores into %s", copied, store.path)
    return copied
