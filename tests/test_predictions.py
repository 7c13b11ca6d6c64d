"""Per-clip prediction files (dlkdd/predictions.py): round trip, errors, written by training runs
and by `dlkdd evaluate --predictions`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from dlkdd.cli import main
from dlkdd.errors import DataError
from dlkdd.predictions import (PREDICTIONS_FILE, Predictions, from_logits, read_predictions, eval_view_spec,
                               write_predictions)


def _preds(seed=0, n=7, c=4):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * 3
    return from_logits([f"A/A_{i}_1" for i in range(n)], rng.integers(0, c, n), z, [f"c{j}" for j in range(c)],
                       {"views": {"clips": 1, "crops": 1, "frames": 4, "stride": 2, "size": 32, "resize": 40},
                        "seed": 3})


def test_from_logits_is_softmax():
    p = from_logits(["a", "b"], [0, 1], np.array([[0.0, np.log(3.0)], [2.0, 2.0]]), ["x", "y"])
    np.testing.assert_allclose(p.probs, [[0.25, 0.75], [0.5, 0.5]])
    assert p.pred.tolist() == [1, 0] and p.correct.tolist() == [False, False] and p.top1 == 0.0


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_round_trip(tmp_path, suffix):
    p = _preds()
    f = write_predictions(tmp_path / f"p{suffix}", p, topk=3)
    q = read_predictions(f)
    assert q.keys == p.keys and q.classes == p.classes
    np.testing.assert_array_equal(q.labels, p.labels)
    np.testing.assert_allclose(q.probs, p.probs, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(q.pred, p.pred)
    assert q.meta == p.meta
    if suffix == ".jsonl":
        rows = [json.loads(s) for s in f.read_text().splitlines()[1:]]
        assert [r["pred"] for r in rows] == p.pred.tolist()
        assert [r["topk"][0] for r in rows] == p.pred.tolist() and all(len(r["topk"]) == 3 for r in rows)
        assert all(p.probs[i, r["topk"][1]] >= p.probs[i, r["topk"][2]] for i, r in enumerate(rows))
    else:
        assert f.read_text().splitlines()[1] == "key,label,pred,topk,p_c0,p_c1,p_c2,p_c3"


def test_run_directory_and_errors(tmp_path):
    write_predictions(tmp_path / PREDICTIONS_FILE, _preds())
    assert len(read_predictions(tmp_path)) == 7
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no predictions.jsonl"):
        read_predictions(tmp_path / "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"classes": ["a"]}\n')
    with pytest.raises(DataError, match="not a dlkdd prediction file"):
        read_predictions(bad)
    bad.write_text('{"dlkdd_predictions": 1, "classes": ["a", "b"]}\n{"key": "k", "label": 0, "probs": [1.0]}\n')
    with pytest.raises(DataError, match="malformed"):
        read_predictions(bad)
    with pytest.raises(DataError, match="listed twice"):
        Predictions(["k", "k"], [0, 0], [[1.0], [1.0]], ["a"])


TINY = ["clip.frames=4", "clip.stride=2", "clip.size=32", "clip.resize=40", "train.epochs=1", "train.batch_size=4",
        "train.workers=0", "model.head=avg", "model.backbone=r2plus1d_tiny"]


def test_training_run_writes_predictions_and_evaluate_matches(tmp_path):
    from dlkdd.data.synth import make_synthetic

    paths = make_synthetic(tmp_path / "data", classes=2, clips_per_class=3, frames=8, size=(32, 48), seed=2)
    sets = [a for s in TINY for a in ("--set", s)]
    run = tmp_path / "base"
    r = CliRunner().invoke(main, ["--device", "cpu", "student", "--config", paths["config"], *sets, "--no-kd",
                                  "--out", str(run), "--no-progress"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    metrics = json.loads((run / "metrics.json").read_text())
    p = read_predictions(run)
    assert len(p) == metrics["val"]["n"] == 2
    assert p.top1 == pytest.approx(metrics["top1"])
    assert p.meta["kind"] == "baseline" and p.meta["views"]["frames"] == 4 and p.meta["views"]["clips"] == 1
    out = tmp_path / "eval.csv"
    r = CliRunner().invoke(main, ["--device", "cpu", "evaluate", str(run / "student.pt"), "--config", paths["config"],
                                  *sets, "--predictions", str(out), "--json", str(tmp_path / "eval.json"),
                                  "--workers", "0", "--no-progress"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    q = read_predictions(out)
    # the same weights on the same centred views: the same clips, views and probabilities
    assert sorted(q.keys) == sorted(p.keys) and q.meta["views"] == p.meta["views"]
    np.testing.assert_allclose(q.aligned(p.keys).probs, p.probs, atol=1e-4)
    assert q.meta["seed"] == 0 and q.meta["kind"] == "baseline"
    from dlkdd.predictions import load_predictions

    j = load_predictions(tmp_path / "eval.json")  # an `evaluate --json` file serves `compare` too
    assert j.keys == q.keys and j.meta["views"] == q.meta["views"]
    np.testing.assert_allclose(j.probs, q.probs, atol=1e-12)
    assert eval_view_spec(type("C", (), {"frames": 4, "stride": 2, "size": 32, "resize": 40})) == p.meta["views"]


def test_engine_evaluate_returns_per_clip_logits():
    import torch
    from torch import nn

    from dlkdd.train.engine import evaluate

    class LogitsIn(nn.Module):
        def forward(self, x):
            return x.flatten(1)

    def batch(lg, lab, keys):
        return {"video": torch.tensor(lg, dtype=torch.float32)[:, :, None, None, None], "label": torch.tensor(lab),
                "key": keys}

    b1, b2 = batch([[3, 0, 0], [0, 4, 0]], [1, 1], ["a", "a"]), batch([[0, 0, 1], [0, 1, 0]], [2, 1], ["b", "c"])
    r = evaluate(LogitsIn(), [b1, b2], "cpu", 3, progress=False, predictions=True)
    assert r["predictions"]["keys"] == ["a", "a", "b", "c"] and r["predictions"]["labels"] == [1, 1, 2, 1]
    assert r["predictions"]["logits"].tolist() == [[3, 0, 0], [0, 4, 0], [0, 0, 1], [0, 1, 0]]
    assert "predictions" not in evaluate(LogitsIn(), [b1], "cpu", 3, progress=False)
