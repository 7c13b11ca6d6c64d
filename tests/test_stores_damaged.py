"""Logit stores: a 0-clip store fails verify, deleted/truncated/bit-flipped chunks are named as store damage,
``cache ls`` on a missing directory, ``cache-logits`` refuses an empty list and compares the teacher's clip
spec, the student replays the views its store holds."""
from __future__ import annotations

from pathlib import Path
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import faults
from dlkdd.cli import main
from faults import assert_clean_error, cli, count, sets

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)

ONE_EPOCH = ["train.epochs=1"]


def _invoke(args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def test_zero_clip_store_fails_verify(tmp_path):
    from dlkdd.cache.inspect import verify_store
    from dlkdd.cache.store import LogitStore

    count("bad store")
    with LogitStore.create(tmp_path / "e.zarr", [], 2, 2, {"classes": ["a", "b"]}) as s:
        s.mark_complete()
    assert any("holds no clips" in p for p in verify_store(tmp_path / "e.zarr"))


def _damaged_copy(store: Path, work: Path, name: str) -> Path:
    d = work / name
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(store, d)
    return d


def test_deleted_and_truncated_chunks_are_named_as_store_damage(work, store, cfg):
    from dlkdd.cache.inspect import verify_store
    from dlkdd.cache.store import LogitStore
    from dlkdd.errors import CacheError

    # a deleted chunk: it used to read as NaN and stop training on "non-finite kd_loss ... lower train.lr"
    gone = _damaged_copy(store, work, "gone.zarr")
    (gone / "logits" / "c" / "1" / "0" / "0").unlink()
    count("damaged store", 4)
    with LogitStore.open(gone) as s, pytest.raises(CacheError, match="damaged: missing or unreadable logits chunk"):
        s.read(1)
    probs = verify_store(gone)
    assert any("missing/unreadable logits chunk" in p for p in probs) and not any("non-finite" in p for p in probs)
    err = assert_clean_error(_invoke(["cache", "stats", gone, "--config", cfg]), str(gone), "damaged")
    assert "--overwrite" in err and "cache-logits" in err
    err = assert_clean_error(_invoke(["student", "--config", cfg, *sets(extra=ONE_EPOCH), "--cache", gone,
                                      "--out", work / "s_gone", "--no-progress"]), str(gone), "damaged")
    assert "kd_loss" not in err
    # a truncated chunk: it used to give a Zstd traceback
    cut = _damaged_copy(store, work, "cut.zarr")
    chunk = cut / "logits" / "c" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:5])
    count("damaged store", 3)
    with LogitStore.open(cut) as s, pytest.raises(CacheError, match="damaged: unreadable logits chunk"):
        s.read(0)
    assert any("missing/unreadable logits chunk" in p for p in verify_store(cut))
    assert_clean_error(_invoke(["cache", "stats", cut, "--config", cfg]), str(cut), "damaged")
    # cache ls says what it checked; --verify reads every chunk
    r = _invoke(["cache", "ls", work])
    assert r.exit_code == 0 and "not verified" in r.output
    r = _invoke(["cache", "ls", work, "--verify"])
    line = next(ln for ln in r.output.splitlines() if ln.startswith("cut.zarr"))
    assert "damaged" in line and "yes" not in line
    assert next(ln for ln in r.output.splitlines() if ln.startswith("t.zarr")).rstrip().endswith("yes")


def test_bit_flipped_hdf5_is_store_damage(tmp_path):
    """Flip every 64-byte block of a small HDF5 store in turn: opening and reading it either works
    (the flip hit unused bytes or plain data) or is a CacheError naming the store - never an h5py
    traceback."""
    from dlkdd.cache.store import LogitStore
    from dlkdd.errors import CacheError

    p = tmp_path / "s.h5"
    with LogitStore.create(p, [f"k{i}" for i in range(8)], 2, 3, {"classes": ["a", "b", "c"]}, fmt="hdf5") as s:
        s.write_many(range(8), np.ones((8, 2, 3)), np.zeros((8, 2, 8)))
        s.mark_complete()
    raw = p.read_bytes()
    q = tmp_path / "q.h5"
    named = 0
    for off in range(0, len(raw), 64):
        b = bytearray(raw)
        b[off:off + 64] = bytes(x ^ 0xFF for x in b[off:off + 64])
        q.write_bytes(bytes(b))
        try:
            with LogitStore.open(q) as s:
                s.read_many(range(8))
        except CacheError as e:
            assert str(q) in str(e)
            named += "damaged" in str(e)
    assert named >= 5
    count("damaged store")


def test_cache_ls_on_a_missing_directory(work):
    count("bad input")
    assert_clean_error(_invoke(["cache", "ls", work / "nowhere"]), "no such directory")


def test_student_uses_the_views_the_store_holds(work, store, cfg):
    count("bad config")
    r = _invoke(["student", "--config", cfg, *sets(extra=[*ONE_EPOCH, "cache.views=5"]), "--cache", store,
                 "--out", work / "s_views", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (work / "s_views" / "student.pt").is_file()


def test_cache_logits_compares_the_teachers_clip_spec(caplog, cfg):
    from dlkdd.config import load_config
    from dlkdd.pipeline.cache_logits import _warn_clip_mismatch

    c = load_config(cfg, [*faults.TINY])
    with caplog.at_level("WARNING"):
        _warn_clip_mismatch({"config": {"clip": {"frames": 4, "stride": 2, "size": 32, "resize": 40}}}, c, Path("t.pt"))
        assert not caplog.text
        _warn_clip_mismatch({"config": {"clip": {"frames": 8, "stride": 2, "size": 32, "resize": 40}}}, c, Path("t.pt"))
    assert "clip.frames=4 (teacher: 8)" in caplog.text and "--set clip.frames=8" in caplog.text


def test_empty_list_refused_by_cache_logits_too(work, cfg):
    empty = work / "empty2.txt"
    empty.write_text("")
    teacher = faults.make_checkpoint(work / "teacher_e.pt", cfg, kind="teacher")
    count("bad input")
    assert_clean_error(_invoke(["cache-logits", "--config", cfg, *sets(), "--set", f"data.train_list={empty}",
                                "--teacher", teacher, "--out", work / "e0.zarr", "--no-progress"]), "no usable clip")
    assert not (work / "e0.zarr").exists()
