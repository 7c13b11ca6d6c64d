"""The logit store at scale (issue 26) and its data-driven fields (issue 23): a Zarr store is a few
shards of many rows, not files per row; rows are read and written by their bytes
(dlkdd.cache.rowfile) and zarr reads the same bytes; a resumed write gives the same bytes; ranks own
whole shards; named per-view fields round-trip and reach the sample; `dlkdd cache bench` works."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dlkdd.cache.inspect import verify_store
from dlkdd.cache.parts import shard_rows
from dlkdd.cache.reader import StoreRows
from dlkdd.cache.store import LogitStore, StoreLayout
from dlkdd.cli import main
from dlkdd.data.views import StoredView
from dlkdd.errors import CacheError

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
V, C, P = 2, 3, 8


class Keys:
    def __init__(self, keys):
        self._keys = list(keys)

    def keys(self):
        return list(self._keys)


def _keys(n):
    return [f"c{i % 3}/clip_{i:05d}" for i in range(n)]


def _data(n, seed=0, d=0):
    rng = np.random.default_rng(seed)
    out = {"logits": rng.normal(size=(n, V, C)).astype(np.float32) * 5, "views": rng.normal(size=(n, V, P))}
    if d:
        out["features"] = rng.normal(size=(n, V, d)).astype(np.float32)
    return out


def _chunk_files(p: Path) -> dict[str, bytes]:
    """Every chunk/shard file of a Zarr store (not the JSON metadata, which holds a timestamp)."""
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file() and f.name != "zarr.json"}


def test_many_rows_are_few_files(tmp_path):
    n = 4096
    p = tmp_path / "s.zarr"
    with LogitStore.create(p, _keys(n), V, C, {"classes": ["a", "b", "c"]}) as s:
        assert s.rows_per_chunk == n // 64 and s.parallel_writers
        d = _data(n)
        s.write_fields(np.arange(n), d)
        s.mark_complete()
    files = [f for f in p.rglob("*") if f.is_file()]
    # 64 shards x (logits, views, done) + keys chunk + 5 zarr.json, against 3 files per row before
    assert len(files) == 64 * 3 + 1 + 5
    with LogitStore.open(p) as s:
        np.testing.assert_array_equal(s.read_all()[0], d["logits"].astype(np.float16).astype(np.float32))
    assert verify_store(p) == []


def test_rowfile_bytes_are_what_zarr_reads(tmp_path):
    """Rows written by RowFile in several partial batches, out of order, with gaps: zarr reads the
    same values, unwritten rows are the fill value, and the store verifies once complete."""
    import zarr

    n = 100
    p = tmp_path / "s.zarr"
    d = _data(n, seed=1)
    order = np.random.default_rng(2).permutation(n)
    with LogitStore.create(p, _keys(n), V, C, {"classes": ["a", "b", "c"]}, layout=StoreLayout(rows_per_chunk=16)) as s:
        first = order[:60]
        s.write_fields(first, {k: a[first] for k, a in d.items()})
        g = zarr.open_group(str(p), mode="r")
        z = np.asarray(g["logits"][:])
        np.testing.assert_array_equal(z[first], d["logits"][first].astype(np.float16))
        assert np.isnan(z[order[60:]]).all() and g["done"][:].sum() == 60
        assert not s.done[order[60:]].any()
        with pytest.raises(CacheError, match="no logits stored yet"):
            s.read(int(order[70]))
        rest = order[60:]
        for lo in range(0, rest.size, 7):
            r = rest[lo:lo + 7]
            s.write_fields(r, {k: a[r] for k, a in d.items()})
        s.mark_complete()
    g = zarr.open_group(str(p), mode="r")
    np.testing.assert_array_equal(np.asarray(g["views"][:]), d["views"])
    np.testing.assert_array_equal(np.asarray(g["logits"][:]), d["logits"].astype(np.float16))
    assert verify_store(p) == []


def test_resumed_write_gives_the_same_bytes(tmp_path):
    n = 50
    d = _data(n, seed=3, d=4)
    whole, resumed = tmp_path / "whole.zarr", tmp_path / "resumed.zarr"
    with LogitStore.create(whole, _keys(n), V, C, {}, layout=StoreLayout(feature_dim=4, rows_per_chunk=8)) as s:
        s.write_fields(np.arange(n), d)
    with LogitStore.create(resumed, _keys(n), V, C, {}, layout=StoreLayout(feature_dim=4, rows_per_chunk=8)) as s:
        part = np.arange(0, n, 3)  # an interrupted run wrote every third row (its shards half full)
        s.write_fields(part, {k: a[part] for k, a in d.items()})
    with LogitStore.open(resumed, mode="r+") as s:  # the resumed run writes what is not done
        todo = s.missing_indices()
        assert todo.size == n - part.size
        s.write_fields(todo, {k: a[todo] for k, a in d.items()})
    assert _chunk_files(whole) == _chunk_files(resumed)


def test_ranks_own_whole_shards_and_write_one_store(tmp_path):
    from dlkdd.bench.store import bench_store

    n = 300
    p = tmp_path / "s.zarr"
    res = bench_store(p, n, V, C, "zarr", ranks=2, singles=20, batches=2)
    assert res["write_clips_per_s"] > 0
    with LogitStore.open(p) as s:
        rpc = s.rows_per_chunk
        assert s.is_complete and s.done.all() and rpc == 5
        shares = [shard_rows(range(n), r, 2, rpc) for r in range(2)]
        assert sorted(shares[0] + shares[1]) == list(range(n))
        assert not {r // rpc for r in shares[0]} & {r // rpc for r in shares[1]}
    assert [x for x in verify_store(p) if "classes" not in x] == []


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_named_fields_round_trip(tmp_path, suffix):
    n = 10
    p = tmp_path / f"s{suffix}"
    d = _data(n, seed=4, d=6)
    d["topk"] = np.random.default_rng(5).normal(size=(n, V, 2))
    with LogitStore.create(p, _keys(n), V, C, {},
                           layout=StoreLayout(feature_dim=6, fields={"topk": ((2,), "float64")})) as s:
        assert s.fields == {"logits": ((C,), "float16"), "views": ((P,), "float64"),
                            "features": ((6,), "float16"), "topk": ((2,), "float64")}
        with pytest.raises(CacheError, match=r"missing \['topk'\]"):
            s.write_fields([0], {k: a[:1] for k, a in d.items() if k != "topk"})
        s.write_fields(np.arange(n), d)
        assert s.meta["fields"]["topk"] == {"shape": [2], "dtype": "float64"}
    with LogitStore.open(p) as s:
        got = s.read_fields([7, 2])
        raw = s.read_fields([7], ("features",), raw=True)["features"]
    assert raw.dtype == np.float16 and got["features"].dtype == np.float32
    np.testing.assert_array_equal(got["topk"], d["topk"][[7, 2]])
    np.testing.assert_array_equal(got["features"], d["features"][[7, 2]].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(got["views"], d["views"][[7, 2]])
    with pytest.raises(CacheError, match="bad or repeated field name"):
        LogitStore.create(tmp_path / "bad.zarr", _keys(2), V, C, {},
                          layout=StoreLayout(fields={"done": ((1,), "float32")}))


def test_stored_view_passes_every_field(tmp_path):
    n = 6
    p = tmp_path / "s.zarr"
    d = _data(n, seed=6, d=4)
    with LogitStore.create(p, _keys(n), V, C, {}, layout=StoreLayout(feature_dim=4, dtype="float32")) as s:
        s.write_fields(np.arange(n), d)
    order = list(reversed(_keys(n)))  # the manifest's order differs from the store's: joined by key
    policy = StoredView(StoreRows(Keys(order), p), seed=0)
    for i in range(n):
        v, view, fields = policy._stored(i, epoch=1)
        row = n - 1 - i
        assert set(fields) == {"teacher_logits", "teacher_features"}
        assert torch.equal(fields["teacher_features"], torch.from_numpy(d["features"][row, v]))
        assert torch.equal(fields["teacher_logits"], torch.from_numpy(d["logits"][row, v]))
        np.testing.assert_array_equal(view, d["views"][row, v])


def test_legacy_one_row_chunk_store_still_reads_and_writes(tmp_path):
    """The pre-issue-26 layout (one row per chunk, zstd-compressed logits) reads through zarr and
    takes rows written into it (a resume by the new code)."""
    p = tmp_path / "store.zarr"
    shutil.copytree(LEGACY / "store.zarr", p)
    with LogitStore.open(p, mode="r+") as s:
        assert s.rows_per_chunk == 1 and set(s.fields) == {"logits", "views"}
        lg, vw = s.read_all()
        s.write(1, lg[1] + 1, vw[1])
        np.testing.assert_array_equal(s.read(1)[0], (lg[1] + 1).astype(np.float16).astype(np.float32))


def test_cache_bench_command(tmp_path):
    out, js = tmp_path / "b.zarr", tmp_path / "b.json"
    args = ["cache", "bench", "--clips", "40", "--views", "2", "--classes", "3", "--out", str(out), "--json", str(js),
            "--no-progress"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    for k in ("write_clips_per_s", "read_clips_per_s", "read_batch_clips_per_s"):
        assert res[k] > 0 and f"{k}: " in r.output
    assert out.is_dir() and res["files"] == len([f for f in out.rglob("*") if f.is_file()])
    r = CliRunner().invoke(main, args)  # the store is kept: a second run must not replace it silently
    assert r.exit_code != 0 and "already exists" in r.output and "--overwrite" in r.output
    r = CliRunner().invoke(main, [*args, "--overwrite"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, [*args[:-3], "--json", str(out / "x.json"), "--overwrite"])
    assert r.exit_code != 0 and "inside --out" in r.output
    r = CliRunner().invoke(main, [*args[:-3], "--json", str(out), "--overwrite"])
    assert r.exit_code != 0 and str(out) in r.output


def test_shard_files_take_the_umask_mode_and_a_truncated_shard_is_named_damaged(tmp_path):
    """Shards are written like zarr's own files (mode 0666 & ~umask, not mkstemp's 0600: a store built by one
    user is read by another), through one fixed temporary name (no stray files after a write); adding rows to
    a truncated shard is the one-line "damaged" error, not a ValueError traceback."""
    import os

    n = 256
    p = tmp_path / "s.zarr"
    old = os.umask(0o022)
    try:
        with LogitStore.create(p, _keys(n), V, C, {"classes": ["a", "b", "c"]}) as s:
            s.write_fields(np.arange(0, n, 2), {k: v[::2] for k, v in _data(n).items()})
    finally:
        os.umask(old)
    shards = [f for f in (p / "logits").rglob("*") if f.is_file() and f.name != "zarr.json"]
    assert shards and all(f.stat().st_mode & 0o777 == 0o644 for f in shards)
    assert not [f for f in p.rglob(".*") if f.is_file()]  # no temporary files left behind
    shards[0].write_bytes(b"")
    with LogitStore.open(p, "r+") as s, pytest.raises(CacheError, match="damaged"):
        s.write_fields(np.arange(1, n, 2), {k: v[1::2] for k, v in _data(n).items()})
