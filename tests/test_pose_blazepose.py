"""The real pose stage (BlazePose full) on real arid6 clips, run by the pose environment's python (a
subprocess: mediapipe cannot share the main environment); skipped with the reason where ``.venv-pose`` is
absent (``make pose-env`` creates it). A video with nobody in it gives an all-zero mask; a torchrun run on
2 ranks writes the same store as one process."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dlkdd.pose.stages import POSE_PYTHON
from dlkdd.pose.store import PoseStore, verify
from tests.conftest import REPO, shared_path

PY = Path(os.environ.get("DLKDD_POSE_PYTHON") or POSE_PYTHON)
pytestmark = pytest.mark.skipif(not PY.exists(), reason=f"no pose environment at {PY} (make pose-env)")
CLIPS = [("Turn", "Turn_1_42", 4), ("Walk", "Walk_14_2", 5)]


def _pose(d: Path, out: str, *launcher: str) -> None:
    cmd = [*launcher, "-m", "dlkdd", "pose", "--config", str(REPO / "configs" / "arid6-pose.yaml"),
           "--set", f"data.root={d}", "--set", f"data.train_list={d / 'list.txt'}", "--set", "data.test_list=",
           "--set", f"data.mapping={d / 'map.txt'}", "--split", "train", "--enhancer", "gamma", "--out", str(d / out),
           "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.fixture(scope="module")
def posed(tmp_path_factory):
    from dlkdd.data.writer import write_video

    d = tmp_path_factory.mktemp("blazepose")
    src = shared_path("arid6", "clips")
    (d / "map.txt").write_text((shared_path("arid6", "mapping_table.txt")).read_text())
    lines = []
    for i, (c, n, y) in enumerate(CLIPS):
        (d / c).mkdir(exist_ok=True)
        (d / c / f"{n}.mp4").symlink_to(src / c / f"{n}.mp4")
        lines.append(f"{i}\t{y}\t{c}/{n}.avi")
    (d / "Jump").mkdir()
    write_video(d / "Jump" / "Empty_1.mp4", np.full((20, 120, 160, 3), 3, np.uint8))  # a dark room, nobody
    lines.append(f"{len(lines)}\t0\tJump/Empty_1.avi")
    (d / "list.txt").write_text("\n".join(lines) + "\n")
    _pose(d, "one.zarr", str(PY))
    return d


def test_real_poses_and_an_empty_video(posed):
    assert verify(posed / "one.zarr") == []
    with PoseStore.open(posed / "one.zarr") as s:
        a = s.read_all()
        assert s.keys() == ["Turn/Turn_1_42", "Walk/Walk_14_2", "Jump/Empty_1"] and s.meta["complete"]
        assert len(s.meta["spec"]["model_sha256"]) == 64
    assert a["rows"].tolist() == [17, -(-a["frames"][1] // 2), 10]
    assert a["mask"][:2].sum() > 0  # people in the enhanced real clips
    x = a["keypoints"][:2][a["mask"][:2]]
    assert ((x[..., :2] > -0.5) & (x[..., :2] < 1.5)).all() and ((x[..., 3] >= 0) & (x[..., 3] <= 1)).all()
    assert not a["mask"][2].any() and not a["keypoints"][2].any()  # nobody: all-zero mask, no crash


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(posed):
    _pose(posed, "two.zarr", str(PY.parent / "torchrun"), "--standalone", "--nproc_per_node=2")
    with PoseStore.open(posed / "one.zarr") as s1, PoseStore.open(posed / "two.zarr") as s2:
        a, b = s1.read_all(), s2.read_all()
        assert s2.meta["complete"] and s1.meta["spec"] == s2.meta["spec"]
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_evaluate_poses_a_new_list_with_the_pose_env(posed, monkeypatch):
    """``evaluate`` on a list without a pose store, from an environment without mediapipe: the pose
    environment poses it (a subprocess), then the checkpoint scores it."""
    import sys

    import torch

    from dlkdd.config import load_config
    from dlkdd.data.manifest import read_arid
    from dlkdd.pipeline.evaluate import evaluate_checkpoint
    from dlkdd.pose.skeleton import SkeletonNet
    from dlkdd.pose.stages import pose_arch
    from dlkdd.train.checkpoint import save_checkpoint

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.setenv("DLKDD_POSE_PYTHON", str(PY))
    monkeypatch.chdir(posed)
    cfg = load_config(REPO / "configs" / "arid6-pose.yaml", [f"cache.dir={posed / 'cache'}"])
    man = read_arid(posed / "list.txt", posed / "map.txt", posed, check_files=True)
    torch.manual_seed(0)
    net = SkeletonNet(len(man.classes), cfg.pose.net, cfg.pose.width, cfg.pose.dropout)
    save_checkpoint(posed / "t.pt", kind="teacher", arch=pose_arch(cfg, len(man.classes), "gamma"),
                    model=net.state_dict(), config=cfg.to_dict(), classes=man.classes)
    m = evaluate_checkpoint(posed / "t.pt", man, device="cpu", progress=False)
    assert m["n"] == 3 and m["pose_store"].startswith(str(posed / "cache" / "pose"))
    with PoseStore.open(m["pose_store"]) as s, PoseStore.open(posed / "one.zarr") as ref:
        assert np.array_equal(s.read_all()["keypoints"], ref.read_all()["keypoints"])  # the same poses


def test_predict_poses_new_videos_with_the_pose_env(posed, monkeypatch):
    """``predict`` on a pose checkpoint from an environment without mediapipe: one pose-environment call poses
    a real clip and an empty room (BlazePose, gamma as the teacher's training data); nobody in the room is a
    note, not a crash."""
    import sys

    import torch

    from dlkdd.config import load_config
    from dlkdd.pipeline.evaluate import PredictOptions, load_model, predict_videos
    from dlkdd.pose.skeleton import SkeletonNet
    from dlkdd.pose.stages import pose_arch
    from dlkdd.train.checkpoint import save_checkpoint

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.setenv("DLKDD_POSE_PYTHON", str(PY))
    cfg = load_config(REPO / "configs" / "arid6-pose.yaml", ["pose.max_frames=12", f"cache.dir={posed / 'cache'}"])
    classes = ["Jump", "Run", "Sit", "Stand", "Turn", "Walk"]
    torch.manual_seed(0)
    net = SkeletonNet(len(classes), cfg.pose.net, cfg.pose.width, cfg.pose.dropout)
    save_checkpoint(posed / "p.pt", kind="teacher", arch=pose_arch(cfg, len(classes), "gamma"),
                    model=net.state_dict(), config=cfg.to_dict(), classes=classes)
    model, ck = load_model(posed / "p.pt")
    turn, empty = posed / "Turn" / "Turn_1_42.mp4", posed / "Jump" / "Empty_1.mp4"
    a, b = predict_videos(model, ck, [turn, empty], "cpu", PredictOptions(topk=2))
    with PoseStore.open(posed / "one.zarr") as s:  # the same poses as the pose stage stored (its first 12 rows)
        ref = s.read_all()
    assert a["pose"] == {"enhancer": "gamma", "posed_frames": 12, "person_frames": int(ref["mask"][0][:12].sum()),
                         "stride": 2}
    assert a["pose"]["person_frames"] > 0 and "only the first 24" in a["note"] and len(a["top"]) == 2
    assert b["pose"]["person_frames"] == 0 and "found nobody" in b["note"]
