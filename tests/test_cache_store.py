"""LogitStore: round trips (Zarr and HDF5, float16/float32), key joins, failure modes,
reading in DataLoader workers, and concurrent writers of disjoint rows into one Zarr store."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from faults import set_raw_meta

from dlkdd.cache.keying import default_store_path, store_name, view_spec_from_config, view_spec_hash
from dlkdd.cache.store import SCHEMA_VERSION, LogitStore, StoreLayout
from dlkdd.config import Config
from dlkdd.errors import CacheError

REPO = Path(__file__).resolve().parents[1]
FORMATS = [("zarr", ".zarr"), ("hdf5", ".h5")]
V, C, P = 3, 5, 8


def _rows(n: int, v: int = V, c: int = C, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, v, c)) * 7).astype(np.float32)
    views = rng.normal(size=(n, v, P))  # float64 with full mantissas
    return logits, views


def _keys(n: int) -> list[str]:
    return [f"Class{i % 3}/Class{i % 3}_{i}_1" for i in range(n)]


class FakeManifest:
    """Duck-typed dlkdd.data.manifest.Manifest: keys(), classes, sha256()."""

    def __init__(self, keys: list[str], classes: list[str], sha: str = "ab" * 32):
        self._keys, self.classes, self._sha = list(keys), list(classes), sha

    def keys(self) -> list[str]:
        return list(self._keys)

    def sha256(self) -> str:
        return self._sha


@pytest.mark.parametrize("fmt,suffix", FORMATS)
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip(tmp_path, fmt, suffix, dtype):
    n = 7
    keys = _keys(n)
    logits, views = _rows(n)
    meta = {"classes": [f"c{j}" for j in range(C)], "teacher_sha256": "0" * 64, "clip": {"frames": 4}}
    path = tmp_path / f"store{suffix}"
    s = LogitStore.create(path, keys, V, C, meta, layout=StoreLayout(dtype=dtype))
    assert s.fmt == fmt and s.path == path and s.num_clips == n
    assert not s.done.any() and not s.is_complete
    s.write(0, logits[0], views[0])
    s.write_many([5, 2, 6], logits[[5, 2, 6]], views[[5, 2, 6]])
    assert s.done.tolist() == [True, False, True, False, False, True, True]
    assert s.missing_indices().tolist() == [1, 3, 4]
    with pytest.raises(CacheError, match="no logits stored yet"):
        s.read(1)
    s.write_many(np.array([1, 3, 4]), logits[[1, 3, 4]], views[[1, 3, 4]])
    s.mark_complete()
    s.close()

    with LogitStore.open(path) as r:
        assert r.fmt == fmt and r.is_complete and r.done.all()
        assert r.keys == keys and (r.views_per_clip, r.num_classes) == (V, C)
        m = r.meta
        assert m["schema_version"] == SCHEMA_VERSION and m["dtype"] == dtype and m["complete"] is True
        assert m["classes"] == meta["classes"] and m["clip"] == {"frames": 4} and m["num_classes"] == C
        expect = logits.astype(dtype).astype(np.float32)
        for i in range(n):
            lg, vw = r.read(i)
            assert lg.dtype == np.float32 and vw.dtype == np.float64
            np.testing.assert_array_equal(lg, expect[i])  # exact after the dtype cast
            np.testing.assert_array_equal(vw, views[i])  # views exact float64
        all_l, all_v = r.read_all()
        np.testing.assert_array_equal(all_l, expect)
        np.testing.assert_array_equal(all_v, views)
        with pytest.raises(CacheError, match="read-only"):
            r.write(0, logits[0], views[0])


@pytest.mark.parametrize("fmt,suffix", FORMATS)
def test_keys_join_manifest_and_features(tmp_path, fmt, suffix):
    n, D = 5, 6
    keys = _keys(n)
    logits, views = _rows(n)
    feats = np.random.default_rng(1).normal(size=(n, V, D)).astype(np.float32)
    s = LogitStore.create(tmp_path / f"f{suffix}", keys, V, C, {}, layout=StoreLayout(dtype="float32", feature_dim=D))
    with pytest.raises(CacheError, match="expects features"):
        s.write(0, logits[0], views[0])
    s.write_many(range(n), logits, views, feats)
    s.mark_complete()
    # the student joins by key: a manifest in another order gets the right rows
    man = FakeManifest(list(reversed(keys)), [f"c{j}" for j in range(C)])
    for k in man.keys():
        i = s.index_of(k)
        np.testing.assert_array_equal(s.read_key(k)[0], logits[i])
        np.testing.assert_array_equal(s.read_features(i), feats[i])
    with pytest.raises(CacheError, match="not in logit store"):
        s.index_of("Nope/nope_1_1")
    s.close()


@pytest.mark.parametrize("fmt,suffix", FORMATS)
def test_create_and_open_failures(tmp_path, fmt, suffix):
    path = tmp_path / f"x{suffix}"
    with pytest.raises(CacheError, match="duplicate key 'a/b'"):
        LogitStore.create(path, ["a/b", "c/d", "a/b"], V, C, {})
    with pytest.raises(CacheError, match="classes"):
        LogitStore.create(path, ["a/b"], V, C, {"classes": ["x"]})
    with pytest.raises(CacheError, match="not plain JSON"):
        LogitStore.create(path, ["a/b"], V, C, {"obj": object()})
    with pytest.raises(CacheError, match="dtype"):
        LogitStore.create(path, ["a/b"], V, C, {}, layout=StoreLayout(dtype="float64"))
    s = LogitStore.create(path, ["a/b", "c/d"], V, C, {})
    lg, vw = _rows(2)
    with pytest.raises(CacheError, match="shape"):
        s.write(0, lg[0, :, :2], vw[0])
    bad = lg[0].copy()
    bad[1, 2] = 1e6  # overflows float16 -> inf
    with pytest.raises(CacheError, match="non-finite logits for \\['a/b'\\]"):
        s.write(0, bad, vw[0])
    with pytest.raises(CacheError, match="out of range"):
        s.write(2, lg[0], vw[0])
    s.close()
    with pytest.raises(CacheError, match="already exists"):
        LogitStore.create(path, ["a/b"], V, C, {})
    s2 = LogitStore.create(path, ["e/f"], V, C, {}, overwrite=True)
    assert s2.keys == ["e/f"]
    s2.set_meta(schema_version=SCHEMA_VERSION, teacher_kind="dlkdd")
    assert s2.meta["teacher_kind"] == "dlkdd"
    s2.close()

    with pytest.raises(CacheError, match="no logit cache at"):
        LogitStore.open(tmp_path / f"missing{suffix}")
    junk = tmp_path / f"junk{suffix}"
    junk.write_text("hello")
    with pytest.raises(CacheError, match="not a logit store"):
        LogitStore.open(junk)
    with pytest.raises(CacheError, match="not a logit store; refusing to overwrite"):
        LogitStore.create(junk, ["a/b"], V, C, {}, overwrite=True)
    assert junk.read_text() == "hello"


@pytest.mark.parametrize("fmt,suffix", FORMATS)
def test_open_refuses_newer_schema_and_foreign_store(tmp_path, fmt, suffix):
    path = tmp_path / f"s{suffix}"
    LogitStore.create(path, ["a/b"], V, C, {}).close()
    set_raw_meta(path, fmt, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(CacheError, match="newer dlkdd"):
        LogitStore.open(path)
    # a valid Zarr/HDF5 container that dlkdd did not write
    other = tmp_path / f"other{suffix}"
    if fmt == "zarr":
        import zarr

        zarr.open_group(str(other), mode="w")
    else:
        import h5py

        h5py.File(other, "w").close()
    with pytest.raises(CacheError, match="not a dlkdd logit store"):
        LogitStore.open(other)


def test_keying_is_stable_and_distinguishes_specs(tmp_path):
    cfg = Config()
    spec = view_spec_from_config(cfg)
    assert spec == {"views_per_clip": 8, "view_seed": 0, "clip": {
        "frames": 16, "stride": 2, "size": 112, "resize": 128, "min_scale": 0.8, "max_scale": 1.0, "flip": True}}
    t, m = "a" * 64, "b" * 64
    name = store_name(t, m, spec, "zarr")
    assert name == f"t{'a' * 12}-m{'b' * 12}-v{view_spec_hash(spec)[:8]}.zarr"
    # key order and int/float spelling do not change the hash; a real change does
    shuffled = {"view_seed": 0, "clip": dict(reversed(list(spec["clip"].items()))), "views_per_clip": 8}
    shuffled["clip"]["max_scale"] = 1
    assert store_name(t, m, shuffled, "zarr") == name
    assert store_name(t, m, view_spec_from_config(cfg, views=4), "zarr") != name
    assert store_name(t, m, view_spec_from_config(cfg.replace(**{"clip.frames": 8})), "zarr") != name
    assert store_name(t, m, view_spec_from_config(cfg.replace(**{"cache.seed": 1})), "zarr") != name
    assert store_name(t, "c" * 64, spec, "zarr") != name
    assert default_store_path(tmp_path, t, m, spec, "hdf5") == tmp_path / name.replace(".zarr", ".h5")
    with pytest.raises(CacheError, match="sha256"):
        store_name("not-a-sha", m, spec)


class _StoreDataset:
    """What the student's replay dataset does: join by key, read (logits, views) of a row."""

    def __init__(self, store: LogitStore):
        self.store = store

    def __len__(self) -> int:
        return self.store.num_clips

    def __getitem__(self, i: int):
        import torch

        lg, vw = self.store.read(i)
        return {"index": i, "key": self.store.keys[i], "logits": torch.from_numpy(lg), "view": torch.from_numpy(vw)}


@pytest.mark.parametrize("fmt,suffix", FORMATS)
def test_read_in_dataloader_workers(tmp_path, fmt, suffix):
    import torch

    n = 12
    keys = _keys(n)
    logits, views = _rows(n, seed=3)
    path = tmp_path / f"dl{suffix}"
    with LogitStore.create(path, keys, V, C, {}, layout=StoreLayout(dtype="float32")) as s:
        s.write_many(range(n), logits, views)
        s.mark_complete()
    store = LogitStore.open(path)
    store.read(0)  # the parent has an open handle before the workers fork
    loader = torch.utils.data.DataLoader(_StoreDataset(store), batch_size=3, shuffle=True, num_workers=2,
                                         multiprocessing_context="fork",
                                         generator=torch.Generator().manual_seed(0))
    seen = set()
    for batch in loader:
        for j, i in enumerate(batch["index"].tolist()):
            assert batch["key"][j] == keys[i]
            np.testing.assert_array_equal(batch["logits"][j].numpy(), logits[i])
            np.testing.assert_array_equal(batch["view"][j].numpy(), views[i])
            seen.add(i)
    assert seen == set(range(n))
    np.testing.assert_array_equal(store.read(5)[0], logits[5])  # parent handle still fine
    store.close()


_WRITER = textwrap.dedent("""
    import os, sys, time, numpy as np
    from dlkdd.cache.store import LogitStore
    path, shard, nshards, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    s = LogitStore.open(path, mode="r+")
    print("ready", flush=True)
    while not os.path.exists(go):  # start together so that the writes interleave
        time.sleep(0.005)
    V, C, P = s.views_per_clip, s.num_classes, s.view_params
    rows = [i for i in range(s.num_clips) if i % nshards == shard]
    for b in range(0, len(rows), 2):
        idx = rows[b:b + 2]
        lg = np.stack([np.full((V, C), i + 0.5, np.float32) for i in idx])
        vw = np.stack([np.full((V, P), i * 1.25) for i in idx])
        s.write_many(idx, lg, vw)
    s.close()
""")


def test_concurrent_writers_of_disjoint_rows_zarr(tmp_path):
    n = 40
    path = tmp_path / "conc.zarr"
    LogitStore.create(path, _keys(n), V, C, {}, layout=StoreLayout(dtype="float32")).close()
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(k), "2", str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == b"ready", p.stderr.read().decode()
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    with LogitStore.open(path, mode="r+") as s:
        assert s.done.all(), s.missing_indices()
        lg, vw = s.read_all()
        for i in range(n):
            assert (lg[i] == i + 0.5).all() and (vw[i] == i * 1.25).all()
        s.mark_complete()
        assert s.is_complete
