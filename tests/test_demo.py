"""``make demo`` end to end on tiny settings: the RGB pipeline through the synthetic fallback (no arid6), and
the pose pipeline - its pose stage in subprocesses as the demo runs it, with a stand-in for BlazePose
(``tests/pose_standin.py``) on a synthetic set laid out as arid6, and, where ``DLKDD_POSE_PYTHON`` names the
pose environment (``make test`` sets it), with the real BlazePose on a few real arid6 clips."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import dlkdd.demo as demo
from tests.conftest import shared_path

TINY_RGB = ["clip.frames=4", "clip.size=32", "clip.resize=40", "train.batch_size=8", "train.workers=0",
            "cache.views=2", "model.head=avg", "model.backbone=r2plus1d_tiny"]
TINY_POSE = ["train.epochs=2", "train.eval_every=1", "train.batch_size=8", "pose.width=8", "clip.frames=4",
             "cache.views=2", "pose.max_frames=8"]


@pytest.fixture(scope="module")
def rgb_demo(tmp_path_factory):
    """The RGB demo on the synthetic fallback (as on a clone without ../shared), 1 epoch."""
    d = tmp_path_factory.mktemp("rgbdemo")
    mp = pytest.MonkeyPatch()
    mp.setattr(demo, "ARID6", d / "absent")
    mp.setattr(demo, "SYNTH", {"classes": 4, "clips_per_class": 5, "frames": 24})  # a smaller fallback set
    try:
        res = demo.run_demo(d / "demo", epochs=1, device="cpu", progress=False, overrides=TINY_RGB)
    finally:
        mp.undo()
    return d / "demo", res


def test_demo_synthetic_fallback_end_to_end(rgb_demo, capsys):
    out, res = rgb_demo
    assert res["dataset"].startswith("synthetic") and res["pipeline"] == "rgb" and "no people to pose" in res["dataset"]
    assert set(res["results"]) == set(demo.RGB_NAMES)
    for r in res["results"].values():
        assert 0.0 <= r["top1"] <= r["top5"] <= 100.0 and r["n"] > 0
    for f in ("teacher/teacher.pt", "student/student.pt", "baseline/student.pt", "summary.md", "summary.json",
              "student/confusion.png", "teacher/eval.json"):
        assert (out / f).is_file(), f
    summary = (out / "summary.md").read_text()
    assert "| Student (DL-KDD, dark input) | dark frames |" in summary and "Artifacts:" in summary
    assert "| Teacher (ZeroDCE + R(2+1)D-BERT) | enhanced (ZeroDCE) |" in summary
    assert "chance is 25.0%" in summary and demo.PAPER in summary
    assert json.loads((out / "summary.json").read_text())["cache"].endswith(".zarr")
    # the table reuses each run's last-epoch evaluation: the same numbers as `dlkdd evaluate` on its checkpoint
    from dlkdd.config import load_config
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.pipeline.evaluate import evaluate_checkpoint

    test = manifest_from_config(load_config(res["config"], res["overrides"]).data, "test")
    again = evaluate_checkpoint(out / "student" / "student.pt", test, device="cpu", workers=0, progress=False)
    shown = res["results"]["Student (DL-KDD, dark input)"]
    assert (shown["top1"], shown["top5"], shown["n"]) == (again["top1"], again["top5"], again["n"])


def _as_arid6(d: Path, root: Path, train: list[str], test: list[str], mapping: str) -> Path:
    """``d/arid6`` laid out as ../shared/data/arid6: clips/ (a link to ``root``), the two lists, the mapping."""
    a = d / "arid6"
    a.mkdir()
    (a / "clips").symlink_to(root)
    (a / "arid6_train.txt").write_text("".join(train))
    (a / "arid6_test.txt").write_text("".join(test))
    (a / "mapping_table.txt").write_text(mapping)
    return a


def _check_pose_demo(out: Path, res: dict, num_classes: int) -> str:
    from dlkdd.pose.store import PoseStore
    from dlkdd.train.checkpoint import load_checkpoint

    assert res["pipeline"] == "pose" and list(res["results"]) == [demo.POSE_NAMES[k] for k in
                                                                  ("teacher", "baseline", "student")]
    assert list(res["times_s"]) == ["pose stage", "teacher", "cache-logits", "student", "baseline"]
    for r in res["results"].values():
        assert 0.0 <= r["top1"] <= r["top5"] <= 100.0 and r["n"] > 0
    # four pose stores (train/test x gamma/none) made by the pose stage at the demo's sampling, from its logs
    stores = sorted((out / "cache" / "pose").glob("*.zarr"))
    assert len(stores) == 4
    for s in stores:
        with PoseStore.open(s) as p:
            assert p.meta["complete"] and p.meta["spec"]["stride"] == 2 and p.meta["spec"]["max_frames"] == 8
            assert p.meta["spec"]["enhancer"]["kind"] in ("gamma", "none")
    assert "pose store complete" in (out / "pose-gamma.log").read_text()
    t, s = load_checkpoint(out / "teacher" / "teacher.pt"), load_checkpoint(out / "student" / "student.pt")
    assert t["arch"]["family"] == "pose" and t["arch"]["enhancer"]["kind"] == "gamma"
    assert s["arch"]["enhancer"]["kind"] == "none" and s["extra"]["cache"] == res["cache"]
    assert load_checkpoint(out / "baseline" / "student.pt")["kind"] == "baseline"
    summary = (out / "summary.md").read_text()
    assert "| pose teacher (gamma-enhanced frames) | poses of gamma-enhanced frames |" in summary
    assert "| pose student (dark frames, CE + KD from the cached teacher) | poses of dark frames |" in summary
    assert f"chance is {100 / num_classes:.1f}%" in summary and demo.RGB_AT_CHANCE in summary
    return summary


def test_pose_demo_with_a_stand_in_pose_stage(rgb_demo, tmp_path, monkeypatch):
    """The pose demo as `make demo` runs it on arid6 - the pose stage's two `dlkdd pose` processes included -
    with a stand-in for BlazePose; beside it the RGB rows of the RGB demo's summary.json."""
    from dlkdd.data.synth import make_synthetic

    syn = make_synthetic(tmp_path / "syn", classes=3, clips_per_class=4, frames=20, size=(48, 64), seed=1)
    a = _as_arid6(tmp_path, Path(syn["root"]), Path(syn["train_list"]).read_text().splitlines(True),
                  Path(syn["test_list"]).read_text().splitlines(True), Path(syn["mapping"]).read_text())
    py = tmp_path / "pose-python"
    py.write_text(f"#!/bin/sh\nexec {sys.executable} -m tests.pose_standin \"$@\"\n")
    py.chmod(0o755)
    monkeypatch.setenv("DLKDD_POSE_PYTHON", str(py))
    monkeypatch.setattr(demo, "ARID6", a)
    rgb_out, rgb = rgb_demo
    res = demo.run_demo(tmp_path / "demo", device="cpu", progress=False, overrides=TINY_POSE, rgb_from=rgb_out)
    summary = _check_pose_demo(tmp_path / "demo", res, 3)
    # the RGB rows: the RGB demo's numbers, scored against its own chance (4 classes there)
    m = rgb["results"]["Student (DL-KDD, dark input)"]
    assert f"| RGB student (DL-KDD, dark input) | dark frames | {m['top1']:.2f} | {m['top5']:.2f} |" in summary
    assert res["rgb"]["results"]["RGB student (DL-KDD, dark input)"]["top1"] == m["top1"]
    # without a pose environment: one line naming the command that makes it
    monkeypatch.setenv("DLKDD_POSE_PYTHON", str(tmp_path / "no-such-python"))
    from dlkdd.errors import DlkddError

    with pytest.raises(DlkddError, match="make pose-env"):
        demo.run_demo(tmp_path / "again", device="cpu", progress=False, overrides=TINY_POSE)


@pytest.mark.skipif(not os.environ.get("DLKDD_POSE_PYTHON"), reason="DLKDD_POSE_PYTHON unset (make test sets it)")
def test_pose_demo_with_the_real_pose_environment(tmp_path, monkeypatch):
    """The real BlazePose (the pose environment) on 8 real arid6 clips, 8 posed frames each; the paper's RGB
    rows where no `make demo-rgb` ran."""
    src = shared_path("arid6")

    def pick(name: str) -> list[str]:  # the first two clips of classes 0 and 2 (Jump, Sit)
        lines = (src / name).read_text().splitlines(True)
        return [ln for y in (0, 2) for ln in [ln for ln in lines if ln.split("\t")[1] == str(y)][:2]]

    a = _as_arid6(tmp_path, src / "clips", pick("arid6_train.txt"), pick("arid6_test.txt"),
                  (src / "mapping_table.txt").read_text())
    monkeypatch.setattr(demo, "ARID6", a)
    res = demo.run_demo(tmp_path / "demo", device="cpu", progress=False, overrides=TINY_POSE,
                        rgb_from=tmp_path / "no-demo-rgb")
    summary = _check_pose_demo(tmp_path / "demo", res, 6)
    assert "| RGB student (DL-KDD, dark input) - paper, full ARID | dark frames | 97.64 | - | - |" in summary
    assert "the paper's, on the full ARID" in summary
    assert len(json.loads((tmp_path / "demo" / "summary.json").read_text())["results"]) == 3
