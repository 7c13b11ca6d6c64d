"""A pose checkpoint on new videos: ``dlkdd predict`` poses them as the training data was (the checkpoint's
enhancer and pose settings), then scores windows; ``dlkdd export`` writes the skeleton network with a keypoint
input. mediapipe is blocked here: a stand-in estimator (a fixed skeleton wherever the enhanced frame is not
black, its arms at the frame's brightness) poses the real arid6 clip; the real pose environment's run is in
tests/test_pose_blazepose.py."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dlkdd.cli import main
from dlkdd.config import load_config
from dlkdd.errors import DlkddError
from dlkdd.pose.skeleton import SkeletonNet
from dlkdd.pose.stages import pose_arch
from dlkdd.train.checkpoint import save_checkpoint
from tests.conftest import REPO, shared_path

CLASSES = ["Drink", "Jump", "Pick", "Pour", "Push", "Run", "Sit", "Stand", "Turn", "Walk", "Wave"][:6]


class StandIn:
    """Pose function ``frames (T,H,W,3) uint8 -> (keypoints (T,33,4), mask (T,))``; records the frames it saw."""

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def __call__(self, frames):
        from tests.test_pose_features import _frame

        self.seen.append(frames)
        t = len(frames)
        kp = np.repeat(_frame().numpy()[None], t, 0)
        kp[:, [15, 16], 1] -= frames.reshape(t, -1).mean(1)[:, None] / 255.0
        mask = frames.reshape(t, -1).mean(1) > 5  # a black frame (or its gamma, about 3) has nobody
        return kp * mask[:, None, None], mask


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("posepredict")
    cfg = load_config(REPO / "configs" / "arid6-pose.yaml", ["pose.width=8", "clip.frames=8", f"cache.dir={d}"])
    torch.manual_seed(0)
    net = SkeletonNet(len(CLASSES), cfg.pose.net, cfg.pose.width, cfg.pose.dropout).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for bn in [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2)
    for kind, enh in (("teacher", "gamma"), ("student", "none")):
        save_checkpoint(d / f"{kind}.pt", kind=kind, arch=pose_arch(cfg, len(CLASSES), enh), model=net.state_dict(),
                        config=cfg.to_dict(), classes=CLASSES)
    return d


@pytest.fixture
def stand_in(monkeypatch):
    """mediapipe blocked; the in-process pose path with the stand-in as the default estimator."""
    from dlkdd.pose import extract, infer

    est = StandIn()
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.setattr(infer, "has_mediapipe", lambda: True)
    monkeypatch.setattr(extract, "_default_estimator", lambda pose_cfg: (est, "ab" * 32))
    return est


def _clip():
    return shared_path("arid6", "clips", "Turn", "Turn_1_42.mp4")


def test_predict_poses_the_video_as_the_checkpoint_was_trained(ckpt, stand_in):
    """Teacher: gamma-enhanced frames 0, 2, 4, ... (pose.stride 2); student: the dark frames; the scores are
    the skeleton network's on the windows of those poses."""
    from dlkdd.data.video import VideoReader
    from dlkdd.pipeline.evaluate import PredictOptions, load_model, predict_video
    from dlkdd.pose.sampling import posed_frames

    video = _clip()
    with VideoReader(video) as r:
        n = r.num_frames
        dark = r.get(posed_frames(n, 2, 64))
    res = {}
    for kind in ("teacher", "student"):
        model, ck = load_model(ckpt / f"{kind}.pt")
        res[kind] = predict_video(model, ck, video, "cpu", PredictOptions(topk=3))
    gamma_seen, dark_seen = stand_in.seen
    assert np.array_equal(dark_seen, dark)  # student: the dark frames, as pose.student_enhancer=none
    from dlkdd.models.enhancers import GammaCorrection

    x = torch.from_numpy(dark).permute(0, 3, 1, 2).float() / 255
    expect = GammaCorrection(3.0)(x).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(gamma_seen, expect) and gamma_seen.mean() > 2 * dark.mean()  # teacher: gamma x**(1/3)
    for kind, r in res.items():
        assert r["video"] == str(video) and r["frames"] == n and len(r["top"]) == 3
        assert abs(sum(t["prob"] for t in r["top"]) - 1) < 1 and r["top"][0]["prob"] >= r["top"][1]["prob"]
        assert r["pose"]["posed_frames"] == len(dark) and r["pose"]["person_frames"] == len(dark)
        assert r["scored"]["windows"] >= 1 and r["scored"]["duration_s"] > 0
    assert res["teacher"]["pose"]["enhancer"] == "gamma" and res["student"]["pose"]["enhancer"] == "none"
    # the reported scores are the network's on the stored-row windows (pose.sampling), averaged
    model, ck = load_model(ckpt / "student.pt")
    kp, mask = StandIn()(dark)
    from dlkdd.pose.sampling import center_window, pose_window, view_rows
    from dlkdd.pipeline.evaluate import window_starts

    cfg = load_config(REPO / "configs" / "arid6-pose.yaml", ["clip.frames=8"])
    rows, span_rows = len(mask), (8 - 1) * 2 + 1
    starts = window_starts(rows, span_rows, span_rows // 2) if rows >= 1.5 * span_rows else [
        center_window(rows, cfg.clip, 2).start // 2]
    x = torch.from_numpy(np.stack([kp[view_rows(pose_window(s, cfg.clip, 2), n, 2, rows)] for s in starts]))
    with torch.no_grad():
        p = model(x).mean(0).softmax(-1)
    assert res["student"]["scored"]["windows"] == len(starts)
    assert res["student"]["top"][0]["label"] == CLASSES[int(p.argmax())]
    assert abs(res["student"]["top"][0]["prob"] - float(p.max())) < 1e-5


def test_predict_cli_nobody_in_the_video_and_a_bad_video(ckpt, stand_in, tmp_path):
    """The command on three videos: a real clip, a black one (nobody: scored, with a note) and a corrupt
    one (its one-line error; the others are still printed)."""
    from dlkdd.data.writer import write_video

    write_video(tmp_path / "black.mp4", np.zeros((20, 64, 80, 3), np.uint8))
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    r = CliRunner().invoke(main, ["--device", "cpu", "predict", str(ckpt / "teacher.pt"), str(_clip()),
                                  str(tmp_path / "black.mp4"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out[0]["note"] is None and out[0]["pose"]["person_frames"] > 0
    assert out[1]["pose"]["person_frames"] == 0 and "found nobody" in out[1]["note"] and len(out[1]["top"]) == 5
    r = CliRunner().invoke(main, ["--device", "cpu", "predict", str(ckpt / "teacher.pt"), str(tmp_path / "bad.mp4")])
    assert r.exit_code != 0 and "Traceback" not in r.output and "bad.mp4" in r.output
    assert len([ln for ln in r.output.splitlines() if ln.startswith("Error")]) == 1


def test_predict_without_mediapipe_or_the_pose_env_says_how(ckpt, monkeypatch, tmp_path):
    from dlkdd.pipeline.evaluate import load_model, predict_video

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.setenv("DLKDD_POSE_PYTHON", str(tmp_path / "no-python"))
    model, ck = load_model(ckpt / "teacher.pt")
    with pytest.raises(DlkddError, match="make pose-env"):
        predict_video(model, ck, _clip(), "cpu")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_the_skeleton_network_with_a_keypoint_input(ckpt, stand_in, tmp_path, fmt):
    """The file maps keypoints (B,T,33,4) to the checkpoint's logits at any B and T; its spec documents the
    input and carries the pose settings, so `dlkdd predict FILE VIDEO` poses like the checkpoint."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    from dlkdd.deploy.export import export_checkpoint
    from dlkdd.deploy.runtime import load_exported
    from dlkdd.pipeline.evaluate import load_model, predict_video
    from dlkdd.pose.export import example_keypoints

    out = tmp_path / f"teacher.{fmt}"
    r = export_checkpoint(ckpt / "teacher.pt", out, fmt)
    assert r["check"]["max_abs_diff"] < 1e-4 and r["input"]["name"] == "keypoints"
    side = json.loads((tmp_path / f"teacher.{fmt}.json").read_text())
    assert side["input"]["layout"] == "B,T,33,4" and side["arch"]["pose"]["stride"] == 2
    assert side["arch"]["enhancer"] == "gamma"
    model, _ = load_model(ckpt / "teacher.pt")
    exported = load_exported(out)
    for b, t in ((1, 5), (3, 16)):
        x = example_keypoints(t, seed=b, batch=b)
        with torch.no_grad():
            assert torch.allclose(exported(x), model(x), atol=1e-4)
    with pytest.raises(DlkddError, match=r"keypoints \(B,T,33,4\)"):
        exported(torch.zeros(1, 3, 8, 32, 32))
    a = predict_video(*load_model(ckpt / "teacher.pt"), _clip(), "cpu")
    b = predict_video(*load_model(out), _clip(), "cpu")
    assert a["top"][0]["label"] == b["top"][0]["label"] and abs(a["top"][0]["prob"] - b["top"][0]["prob"]) < 1e-4


def test_bench_pose_part_on_a_real_clip_with_a_stand_in(monkeypatch, tmp_path):
    """`dlkdd bench --preset pose` (here: one clip, a tiny video student, the stand-in for BlazePose): every stage
    timed, the total is their sum, the report has the section; without mediapipe and without a stand-in the
    part is refused in one line naming the pose environment."""
    import dataclasses

    from dlkdd.bench import run_bench
    from dlkdd.bench import presets
    from dlkdd.bench.report import markdown_report

    shared_path("arid6", "arid6_train.txt")
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.setitem(presets.PRESETS, "pose", dataclasses.replace(
        presets.PRESETS["pose"], pose_clips=1, pose_student=("tiny", "r2plus1d_tiny", 4, 32, "avg")))
    with pytest.raises(ValueError, match=r"\.venv-pose/bin/dlkdd bench --preset pose"):
        run_bench("pose", device="cpu", work_dir=tmp_path)
    r = run_bench("pose", device="cpu", work_dir=tmp_path, pose_estimator=(StandIn(), "ab" * 32),
                  overrides=["enhancer.weights=" + str(tmp_path / "none.pth")])
    assert r["parts"] == ["pose"] and "arid6" in r["dataset"]
    (c,) = r["pose"]["clips"]
    assert c["posed"] == min(64, -(-c["frames"] // 2)) and c["windows"] >= 1
    for k in ("decode_ms", "gamma_ms_per_frame", "zerodce_ms_per_frame", "blazepose_gamma_ms", "blazepose_none_ms",
              "skeleton_ms"):
        assert c[k] > 0, k
    assert abs(c["total_ms"] - (c["decode_ms"] + c["gamma_ms_per_frame"] * c["posed"] + c["blazepose_gamma_ms"]
                                + c["skeleton_ms"])) < 1e-6
    assert "random init" in r["pose"]["enhancers"]["zerodce"] and r["pose"]["video_student"]["forward_ms"] > 0
    md = markdown_report(r)
    assert "### Posing at inference" in md and "frames/s" in md and "total with ZeroDCE" in md
