"""``make demo`` end to end on tiny settings, through the synthetic fallback (no arid6)."""
from __future__ import annotations

import json

import dlkdd.demo as demo


def test_demo_synthetic_fallback_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "ARID6", tmp_path / "absent")  # as on a clone without ../shared
    monkeypatch.setattr(demo, "SYNTH", {"classes": 4, "clips_per_class": 5, "frames": 24})  # a smaller fallback set
    tiny = ["clip.frames=4", "clip.size=32", "clip.resize=40", "train.batch_size=8", "train.workers=0",
            "cache.views=2", "model.head=avg", "model.backbone=r2plus1d_tiny"]
    res = demo.run_demo(tmp_path / "demo", epochs=1, device="cpu", progress=False, overrides=tiny)
    assert res["dataset"].startswith("synthetic")
    assert set(res["results"]) == {"Backbone only (no KD)", "Teacher (ZeroDCE + R(2+1)D-BERT)",
                                   "Student (DL-KDD, dark input)"}
    for r in res["results"].values():
        assert 0.0 <= r["top1"] <= r["top5"] <= 100.0 and r["n"] > 0
    out = tmp_path / "demo"
    for f in ("teacher/teacher.pt", "student/student.pt", "baseline/student.pt", "summary.md", "summary.json",
              "student/confusion.png", "teacher/eval.json"):
        assert (out / f).is_file(), f
    summary = (out / "summary.md").read_text()
    assert "| Student (DL-KDD, dark input) | dark |" in summary and "Artifacts:" in summary
    assert "chance is 25.0%" in summary and "Above chance at 95% (exact binomial): backbone only" in summary
    assert json.loads((out / "summary.json").read_text())["cache"].endswith(".zarr")
    # the table reuses each run's last-epoch evaluation: the same numbers as `dlkdd evaluate` on its checkpoint
    from dlkdd.config import load_config
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.pipeline.evaluate import evaluate_checkpoint

    test = manifest_from_config(load_config(res["config"], res["overrides"]).data, "test")
    again = evaluate_checkpoint(out / "student" / "student.pt", test, device="cpu", workers=0, progress=False)
    shown = res["results"]["Student (DL-KDD, dark input)"]
    assert (shown["top1"], shown["top5"], shown["n"]) == (again["top1"], again["top5"], again["n"])
    assert "Backbone only" in capsys.readouterr().out
