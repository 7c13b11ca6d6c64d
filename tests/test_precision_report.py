"""experiments/precision_report.py: per-step curves of fp32/bf16 runs, the gap between them, the plot."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _mod():
    spec = importlib.util.spec_from_file_location("precision_report", REPO / "experiments" / "precision_report.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["precision_report"] = mod
    spec.loader.exec_module(mod)
    return mod


def _run(d: Path, steps: list[list[float]], top1: float, amp: str) -> None:
    d.mkdir(parents=True)
    hist = [{"epoch": e, "train_loss": sum(s) / len(s), "train_loss_steps": s, "train_seconds": 1.0}
            for e, s in enumerate(steps)]
    (d / "log.json").write_text(json.dumps(hist))
    (d / "metrics.json").write_text(json.dumps({"top1": top1, "amp": amp, "history": hist}))


def test_collect_and_summarise_pair_runs_by_seed(tmp_path):
    pr = _mod()
    _run(tmp_path / "prec-baseline-fp32-s0", [[2.0, 1.8], [1.6, 1.5]], 20.0, "fp32")
    _run(tmp_path / "prec-baseline-bf16-s0", [[2.0, 1.9], [1.5, 1.5]], 25.0, "bf16")
    _run(tmp_path / "prec-baseline-fp32-s1", [[2.2, 2.0], [1.8, 1.7]], 10.0, "fp32")
    (tmp_path / "prec-baseline-bf16-s1").mkdir()  # unfinished: no metrics.json, left out
    data = pr.collect(tmp_path)
    assert sorted(data["baseline"]["fp32"]) == [0, 1] and sorted(data["baseline"]["bf16"]) == [0]
    assert data["baseline"]["bf16"][0]["steps"] == [2.0, 1.9, 1.5, 1.5]
    rep = pr.summarise(data)["baseline"]
    gap = rep["gap"][0]  # only seed 0 has both precisions
    assert list(rep["gap"]) == [0] and gap["steps"] == 4
    assert gap["mean_abs"] == pytest.approx((0 + 0.1 + 0.1 + 0) / 4) and gap["max_abs"] == pytest.approx(0.1)
    assert gap["first_abs"] == 0.0
    assert rep["fp32"]["top1"] == [20.0, 10.0] and rep["bf16"]["final_loss"] == [1.5]
    pr.plot(data, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
