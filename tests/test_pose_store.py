"""The pose store and the pose stage without mediapipe: a stand-in pose estimator on real arid6 clips
(decode -> enhance -> estimator -> store), round trip (Zarr and HDF5), resume, sharded = unsharded,
verification, content addressing. The real BlazePose runs in tests/test_pose_blazepose.py."""
from __future__ import annotations

import numpy as np
import pytest

from dlkdd.cache.parts import shard_rows
from dlkdd.config import load_config
from dlkdd.data.manifest import Entry, Manifest
from dlkdd.data.views import View
from dlkdd.errors import CacheError
from dlkdd.pose import extract
from dlkdd.pose.extract import PoseOutput, extract_poses, pose_store_path
from dlkdd.pose.sampling import num_rows, posed_frames, view_rows
from dlkdd.pose.store import PoseStore, verify
from tests.conftest import shared_path

SHA = "ab" * 32
CLIPS = ["Jump/Jump_8_1", "Sit/Sit_2_3", "Walk/Walk_14_2", "Run/Run_1_1"]


class FakePose:
    """Deterministic stand-in for BlazePose: a person wherever the frame's mean exceeds ``thr``, its
    keypoints a function of the frame's pixels; counts the frames it sees."""

    def __init__(self, thr: float = 0.0, fail_after: int | None = None):
        self.thr, self.fail_after, self.calls, self.frames = thr, fail_after, 0, 0

    def __call__(self, frames):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.frames += len(frames)
        t = len(frames)
        m = frames.reshape(t, -1).mean(1) / 255.0
        kp = np.zeros((t, 33, 4), np.float32)
        kp[..., 0] = m[:, None] + np.arange(33) * 1e-3
        kp[..., 1] = frames[:, ::40, ::40, 1].reshape(t, -1)[:, :33].astype(np.float32) / 255
        kp[..., 3] = 0.5
        mask = m > self.thr
        kp[~mask] = 0
        return kp, mask


@pytest.fixture(scope="module")
def manifest():
    root = shared_path("arid6", "clips")
    return Manifest([Entry(k, str(root / f"{k}.mp4"), i % 2) for i, k in enumerate(CLIPS)], ["a", "b"], str(root))


@pytest.fixture
def cfg(tmp_path):
    return load_config("configs/arid6-pose.yaml", [f"cache.dir={tmp_path / 'cache'}"])


def _arrays(path):
    with PoseStore.open(path) as s:
        return s.read_all()


def test_sampling_rule():
    assert posed_frames(7, 2, 10) == [0, 2, 4, 6] and num_rows(7, 2, 3) == 3 and num_rows(0, 2, 3) == 0
    v = View(4, 4, 5, 0, 0, 1, 1, False)  # frames 4, 8, 12, 16, 20 of a 17-frame video: 20 loops to 3
    assert view_rows(v, 17, 2, 9).tolist() == [2, 4, 6, 8, 1]
    assert view_rows(v, 100, 2, 3).tolist() == [2, 2, 2, 2, 2]  # past the posed rows: the last one
    assert view_rows(v, 0, 2, 0).tolist() == [0] * 5


def test_stage_round_trip_on_real_clips(cfg, manifest, tmp_path):
    est = FakePose(thr=0.1)
    path = extract_poses(cfg, manifest, "gamma", PoseOutput(progress=False), estimator=(est, SHA))
    assert path == pose_store_path(cfg, manifest, "gamma", SHA) and path.parent == tmp_path / "cache" / "pose"
    a = _arrays(path)
    counts = dict(l.split("\t") for l in shared_path("arid6", "frame_counts.txt").read_text().splitlines())
    frames = [int(f) for f in a["frames"]]
    assert frames == [int(counts[f"{k}.mp4"]) for k in CLIPS]
    assert a["rows"].tolist() == [min(-(-f // 2), 64) for f in frames] and est.frames == a["rows"].sum()
    assert a["done"].all() and verify(path, manifest.keys()) == []
    with PoseStore.open(path) as s:
        assert s.keys() == CLIPS and s.meta["complete"] and s.meta["spec"]["enhancer"] == {"kind": "gamma", "gamma": 3.0}
    # gamma brightens: the stand-in sees more "people" than on the dark frames
    dark = extract_poses(cfg, manifest, "none", PoseOutput(progress=False), estimator=(FakePose(thr=0.1), SHA))
    assert dark != path and _arrays(dark)["mask"].sum() < a["mask"].sum()
    # a complete store is reused, not recomputed
    again = FakePose(thr=0.1)
    assert extract_poses(cfg, manifest, "gamma", PoseOutput(progress=False), estimator=(again, SHA)) == path
    assert again.calls == 0


def test_address_depends_on_model_enhancer_sampling_and_list(cfg, manifest):
    base = pose_store_path(cfg, manifest, "gamma", SHA)
    assert pose_store_path(cfg, manifest, "gamma", "cd" * 32) != base
    assert pose_store_path(cfg, manifest, "none", SHA) != base
    from dlkdd.config import load_config as lc

    assert pose_store_path(lc("configs/arid6-pose.yaml", ["pose.stride=3", f"cache.dir={cfg.cache.dir}"]), manifest,
                           "gamma", SHA) != base
    assert pose_store_path(cfg, manifest.subset([0, 1]), "gamma", SHA) != base


def test_resume_after_a_kill_equals_one_run(cfg, manifest, tmp_path):
    ref = extract_poses(cfg, manifest, "none", PoseOutput(out=tmp_path / "ref.zarr", progress=False),
                        estimator=(FakePose(), SHA))
    out = tmp_path / "killed.zarr"
    with pytest.raises(KeyboardInterrupt):
        extract_poses(cfg, manifest, "none", PoseOutput(out=out, progress=False),
                      estimator=(FakePose(fail_after=2), SHA))
    with PoseStore.open(out) as s:
        assert s.done.tolist() == [True, True, False, False] and not s.meta["complete"]
    assert any("not done" in p for p in verify(out))
    rest = FakePose()
    extract_poses(cfg, manifest, "none", PoseOutput(out=out, progress=False), estimator=(rest, SHA))
    assert rest.calls == 2  # only the missing clips
    a, b = _arrays(ref), _arrays(out)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_sharded_equals_unsharded(cfg, manifest, tmp_path):
    """Two ranks' disjoint shares (:func:`dlkdd.cache.parts.shard_rows`, one clip per chunk) into one store
    give the single process's store (the torchrun run itself: tests/test_pose_blazepose.py)."""
    ref = extract_poses(cfg, manifest, "none", PoseOutput(out=tmp_path / "one.zarr", progress=False),
                        estimator=(FakePose(), SHA))
    out = tmp_path / "two.zarr"
    meta = {"spec": _arrays_meta(ref)["spec"], "manifest_sha256": manifest.sha256(), "classes": manifest.classes}
    todo = extract._plan(out, manifest, meta, overwrite=False)
    shares = [shard_rows(todo, r, 2, 1) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == todo and not set(shares[0]) & set(shares[1])
    for r in (1, 0):
        extract._pose_rows(out, manifest, shares[r], None, FakePose(), cfg, False, "none")
    a, b = _arrays(ref), _arrays(out)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _arrays_meta(path):
    with PoseStore.open(path) as s:
        return dict(s.meta)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_store_round_trip_synthetic(tmp_path, suffix):
    p = tmp_path / f"s{suffix}"
    rng = np.random.default_rng(0)
    kp = rng.random((5, 33, 4)).astype(np.float32)
    mask = np.array([True, False, True, True, False])
    with PoseStore.create(p, ["x/a", "x/b"], 8, {"spec": {"stride": 2}}) as s:
        s.write(1, kp, mask, 9)
        s.write(0, kp[:0], mask[:0], 0)
        s.set_meta(complete=True)
    with PoseStore.open(p) as s:
        a = s.read_all()
        assert s.keys() == ["x/a", "x/b"] and s.meta["complete"] and s.fmt == ("zarr" if suffix == ".zarr" else "hdf5")
    assert a["rows"].tolist() == [0, 5] and a["frames"].tolist() == [0, 9] and a["done"].all()
    want = kp * mask[:, None, None]
    assert np.array_equal(a["keypoints"][1, :5], want) and not a["keypoints"][1, 5:].any() and not a["keypoints"][0].any()
    assert a["mask"][1, :5].tolist() == mask.tolist() and verify(p, ["x/a", "x/b"]) == []
    assert verify(p, ["x/b", "x/a"]) == ["its clip keys differ from the list's"]


def test_verify_finds_damage_and_foreign_files(tmp_path):
    p = tmp_path / "s.zarr"
    with PoseStore.create(p, ["a"], 4, {"spec": {"stride": 1}}) as s:
        s.write(0, np.ones((3, 33, 4), np.float32), np.array([True, True, True]), 3)
        s._h["mask"][0] = np.array([True, False, True, False])  # damage: keypoints where "no person"
    assert verify(p) == ["keypoints in rows where no person was found"]
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(CacheError, match="not a readable pose store|not a dlkdd pose store"):
        PoseStore.open(tmp_path / "junk.zarr")
    with pytest.raises(CacheError, match="not found"):
        PoseStore.open(tmp_path / "none.zarr")


def test_a_bad_video_stops_or_is_skipped(cfg, manifest, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    m = Manifest(list(manifest.entries[:1]) + [Entry("x/bad", str(bad), 1)], manifest.classes, manifest.root)
    from dlkdd.errors import DataError

    with pytest.raises(DataError, match="bad.mp4"):
        extract_poses(cfg, m, "none", PoseOutput(out=tmp_path / "a.zarr", progress=False), estimator=(FakePose(), SHA))
    skip = load_config("configs/arid6-pose.yaml", [f"cache.dir={cfg.cache.dir}", "data.on_bad_clip=skip"])
    p = extract_poses(skip, m, "none", PoseOutput(out=tmp_path / "b.zarr", progress=False), estimator=(FakePose(), SHA))
    with PoseStore.open(p) as s:
        assert s.meta["skipped_keys"] == ["x/bad"] and s.read_all()["rows"].tolist()[1] == 0
