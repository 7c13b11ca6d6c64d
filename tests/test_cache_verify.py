"""verify_store / list_stores / store_info / check_store_matches on sound and broken stores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from faults import set_raw_meta

from dlkdd.cache.inspect import list_stores, store_info, verify_store
from dlkdd.cache.keying import view_spec_from_config
from dlkdd.cache.match import check_store_matches
from dlkdd.cache.store import LogitStore
from dlkdd.config import Config
from dlkdd.errors import CacheError

FORMATS = [("zarr", ".zarr"), ("hdf5", ".h5")]
V, C, N = 2, 4, 6
CLASSES = ["Drink", "Jump", "Pick", "Pour"]
KEYS = [f"{CLASSES[i % C]}/{CLASSES[i % C]}_{i}_1" for i in range(N)]
M_SHA = "12" * 32
T_SHA = "34" * 32


class FakeManifest:
    def __init__(self, keys=KEYS, classes=CLASSES, sha=M_SHA):
        self._keys, self.classes, self._sha = list(keys), list(classes), sha

    def keys(self):
        return list(self._keys)

    def sha256(self):
        return self._sha


def _meta(cfg: Config) -> dict:
    spec = view_spec_from_config(cfg, views=V)
    return {"classes": CLASSES, "teacher_sha256": T_SHA, "manifest_sha256": M_SHA, "teacher_kind": "dlkdd",
            "clip": spec["clip"], "view_seed": spec["view_seed"], "config": cfg.to_dict()}


def _build(path: Path, rows=range(N), complete=True, cfg: Config | None = None) -> Path:
    cfg = cfg or Config()
    rng = np.random.default_rng(0)
    with LogitStore.create(path, KEYS, V, C, _meta(cfg)) as s:
        rows = list(rows)
        if rows:
            s.write_many(rows, rng.normal(size=(len(rows), V, C)), rng.uniform(size=(len(rows), V, 8)))
        if complete:
            s.mark_complete()
    return path


def _raw_write(path: Path, fmt: str, name: str, index, value) -> None:
    """Corrupt a store behind LogitStore's back (simulating a bug or bit rot)."""
    if fmt == "zarr":
        import zarr

        zarr.open_group(str(path), mode="r+")[name][index] = value
    else:
        import h5py

        with h5py.File(path, "r+") as f:
            f[name][index] = value


@pytest.mark.parametrize("fmt,suffix", FORMATS)
def test_sound_store_verifies_clean(tmp_path, fmt, suffix):
    p = _build(tmp_path / f"ok{suffix}")
    assert verify_store(p) == []
    assert verify_store(p, manifest=FakeManifest()) == []
    info = store_info(p)
    assert info["fmt"] == fmt and info["complete"] is True and info["done"] == N and info["clips"] == N
    assert info["teacher_sha256"] == T_SHA and info["classes"] == CLASSES and info["size_bytes"] > 0
    assert info["shape"] == {"clips": N, "views": V, "classes": C, "view_params": 8, "feature_dim": 0}


@pytest.mark.parametrize("fmt,suffix", FORMATS)
def test_verify_catches_each_problem(tmp_path, fmt, suffix):
    # a missing row (done false) although the flag claims complete
    p = _build(tmp_path / f"missing{suffix}", rows=[0, 1, 2, 4, 5], complete=False)
    set_raw_meta(p, fmt, complete=True)
    probs = verify_store(p)
    assert len(probs) == 1 and "done=false" in probs[0] and repr(KEYS[3]) in probs[0]

    # a non-finite logit
    p = _build(tmp_path / f"nan{suffix}")
    _raw_write(p, fmt, "logits", (2, 1, 3), np.inf)
    probs = verify_store(p)
    assert len(probs) == 1 and "missing/unreadable logits chunk" in probs[0] and repr(KEYS[2]) in probs[0]

    # an incomplete store (flag unset, rows missing)
    p = _build(tmp_path / f"partial{suffix}", rows=[0, 1], complete=False)
    probs = verify_store(p)
    assert any("not complete" in s for s in probs) and any("4 clip(s) without logits" in s for s in probs)

    # metadata that contradicts the arrays
    p = _build(tmp_path / f"meta{suffix}")
    set_raw_meta(p, fmt, num_classes=C + 1)
    probs = verify_store(p)
    assert len(probs) == 1 and "num_classes=5" in probs[0]
    p = _build(tmp_path / f"meta2{suffix}")
    set_raw_meta(p, fmt, classes=CLASSES[:3], views_per_clip=V + 3)
    probs = verify_store(p)
    assert any("views_per_clip=5" in s for s in probs) and any("3 classes" in s for s in probs)

    # duplicate keys
    p = _build(tmp_path / f"dup{suffix}")
    _raw_write(p, fmt, "keys", 4, KEYS[1])
    probs = verify_store(p)
    assert len(probs) == 1 and "duplicate" in probs[0] and KEYS[1] in probs[0]

    # a manifest with the same keys in another order, and another manifest hash
    p = _build(tmp_path / f"order{suffix}")
    probs = verify_store(p, manifest=FakeManifest(keys=list(reversed(KEYS)), sha="56" * 32))
    assert any("another order" in s for s in probs) and any("manifest_sha256" in s for s in probs)

    # unknown schema and not-a-store are reported, not raised
    p = _build(tmp_path / f"newer{suffix}")
    set_raw_meta(p, fmt, schema_version=99)
    assert "newer dlkdd" in verify_store(p)[0]
    assert "no logit cache" in verify_store(tmp_path / f"absent{suffix}")[0]


def test_list_stores_marks_incomplete(tmp_path):
    _build(tmp_path / "a_complete.zarr")
    _build(tmp_path / "b_partial.h5", rows=[0, 1, 2], complete=False)
    # the flag set by a buggy writer while rows are missing must still list as incomplete
    p = _build(tmp_path / "c_liar.zarr", rows=range(N - 1), complete=False)
    set_raw_meta(p, "zarr", complete=True)
    (tmp_path / "d_junk.zarr").mkdir()
    (tmp_path / "a_complete.zarr.lock").write_text("pid 1\n")
    (tmp_path / "notes.txt").write_text("x")
    rows = list_stores(tmp_path)
    assert [Path(r["path"]).name for r in rows] == ["a_complete.zarr", "b_partial.h5", "c_liar.zarr", "d_junk.zarr"]
    a, b, c, d = rows
    assert a["complete"] is True and a["done"] == N and a["fmt"] == "zarr"
    assert a["teacher"] == T_SHA[:12] and a["manifest"] == M_SHA[:12] and a["teacher_kind"] == "dlkdd"
    assert (a["clips"], a["views"], a["classes"]) == (N, V, C) and a["size_bytes"] > 0
    assert b["complete"] is False and b["done"] == 3 and b["fmt"] == "hdf5"
    assert c["complete"] is False and c["done"] == N - 1
    assert d["complete"] is False and "not a Zarr v3 logit store" in d["error"]
    with pytest.raises(CacheError, match="no such directory"):  # issue 16: a missing directory is an error
        list_stores(tmp_path / "nowhere")


@pytest.mark.parametrize("fmt,suffix", FORMATS)
def test_check_store_matches(tmp_path, fmt, suffix):
    cfg = Config().replace(**{"cache.views": V})
    p = _build(tmp_path / f"m{suffix}", cfg=cfg)
    check_store_matches(p, FakeManifest(), cfg, teacher_sha256=T_SHA)  # matches: no error
    with LogitStore.open(p) as s:
        check_store_matches(s, FakeManifest(), cfg)

    def refused(*args, **kw) -> str:
        with pytest.raises(CacheError) as e:
            check_store_matches(p, *args, **kw)
        msg = str(e.value)
        assert "dlkdd cache-logits --config" in msg and "--teacher" in msg
        return msg

    msg = refused(FakeManifest(classes=["Drink", "Jump", "Pour", "Pick"], sha="99" * 32), cfg)
    assert "classes differ" in msg and "manifest sha256 differs" in msg
    msg = refused(FakeManifest(keys=KEYS[:-1] + ["Run/Run_1_1"]), cfg)
    assert "1 training clip(s) not in the store ['Run/Run_1_1']" in msg
    msg = refused(FakeManifest(), cfg.replace(**{"clip.frames": 8, "clip.flip": False}))
    assert "clip.frames differs: store 16 vs config 8" in msg and "clip.flip differs" in msg
    msg = refused(FakeManifest(), cfg, views=4)
    assert "views per clip differ: store 2 vs config 4" in msg
    msg = refused(FakeManifest(), cfg.replace(**{"cache.seed": 3}))
    assert "view seed differs" in msg
    msg = refused(FakeManifest(), cfg, teacher_sha256="77" * 32, config_path="c.yaml", teacher_path="t.pt")
    assert "teacher differs" in msg and "dlkdd cache-logits --config c.yaml --teacher t.pt" in msg
    assert "classes" not in msg  # only what differs is named

    partial = _build(tmp_path / f"partial{suffix}", rows=[0], complete=False, cfg=cfg)
    with pytest.raises(CacheError, match="store is incomplete \\(1/6 clips done"):
        check_store_matches(partial, FakeManifest(), cfg)


# ---- issue 25, stores: verify must refuse what `student` refuses; `cache ls --verify` must say so by its exit code
def _teacher(tmp_path: Path, classes=CLASSES) -> tuple[Path, str]:
    from dlkdd.train.checkpoint import save_checkpoint
    from dlkdd.utils import sha256_file

    t = save_checkpoint(tmp_path / "teacher.pt", kind="teacher", arch={"family": "dlkdd"}, classes=list(classes),
                        config={}, model={}, epoch=0)
    return t, sha256_file(t)


@pytest.mark.parametrize("fmt,suffix", FORMATS)
def test_verify_refuses_edited_provenance(tmp_path, fmt, suffix):
    t, sha = _teacher(tmp_path)
    p = _build(tmp_path / f"s{suffix}")
    set_raw_meta(p, fmt, teacher_path=str(t), teacher_sha256=sha)
    assert verify_store(p) == []
    set_raw_meta(p, fmt, teacher_sha256="56" * 32)  # the teacher's hash edited
    assert any("teacher_sha256" in x and str(t) in x for x in verify_store(p))
    set_raw_meta(p, fmt, teacher_sha256=sha, classes=CLASSES[::-1])  # the class order edited
    assert any("classes" in x and "teacher" in x for x in verify_store(p))
    clip = dict(_meta(Config())["clip"], frames=99)
    set_raw_meta(p, fmt, classes=CLASSES, clip=clip)  # the clip spec edited (the stored config still says 16)
    probs = verify_store(p)
    assert len(probs) == 1 and "clip" in probs[0] and "frames" in probs[0]


def test_verify_with_a_config_refuses_what_student_refuses(tmp_path):
    p = _build(tmp_path / "s.zarr")
    other = Config().replace(**{"clip.frames": 8})
    with pytest.raises(CacheError, match="clip.frames differs"):
        check_store_matches(p, FakeManifest(), other, views=V)
    probs = verify_store(p, FakeManifest(), cfg=other)
    assert any("clip.frames differs" in x for x in probs)
    assert verify_store(p, FakeManifest(), cfg=Config()) == []


def test_cache_ls_verify_exit_code_names_damage(tmp_path):
    from click.testing import CliRunner

    from dlkdd.cli import main

    _build(tmp_path / "ok.zarr")
    r = CliRunner().invoke(main, ["cache", "ls", str(tmp_path), "--verify"])
    assert r.exit_code == 0, r.output
    _build(tmp_path / "half.zarr", rows=range(2), complete=False)
    r = CliRunner().invoke(main, ["cache", "ls", str(tmp_path), "--verify"])
    assert r.exit_code == 1 and "half.zarr" in r.output
    r = CliRunner().invoke(main, ["cache", "ls", str(tmp_path)])  # without --verify: a listing, exit 0
    assert r.exit_code == 0
