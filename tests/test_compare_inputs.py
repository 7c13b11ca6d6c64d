"""``dlkdd compare`` refuses prediction rows that would be scored wrongly, naming the file and the row:
NaN probabilities (argmax(NaN) = 0 turned a wrong clip right), a ``pred`` that is not the argmax of its
probabilities or lies outside the classes, a label outside the classes. Plus its notes: the same run in
two groups, too few bootstrap replicates for the interval's level, a checkpoint given as a run."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import faults
from dlkdd.cli import main
from faults import assert_clean_error, count

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)

CLASSES = ["Jump", "Walk"]
VIEWS = {"clips": 1, "crops": 1, "frames": 4, "stride": 2, "size": 32, "resize": 40}


def _write(path, rows, fmt="jsonl"):
    """A prediction file of ``rows`` = [(key, label, pred, probs)] (written by hand: may be damaged)."""
    header = {"dlkdd_predictions": 1, "classes": CLASSES, "n": len(rows), "views": VIEWS}
    if fmt == "json":  # an `evaluate --json` file
        obj = {"classes": CLASSES, "test_views": VIEWS,
               "predictions": [{"key": k, "label": y, "pred": p, "probs": q} for k, y, p, q in rows]}
        path.write_text(json.dumps(obj))
    elif fmt == "csv":
        lines = ["# " + json.dumps(header), "key,label,pred,topk," + ",".join(f"p_{c}" for c in CLASSES)]
        lines += [f"{k},{y},{p},{p},{q[0]},{q[1]}" for k, y, p, q in rows]
        path.write_text("\n".join(lines) + "\n")
    else:
        lines = [json.dumps(header)] + [json.dumps({"key": k, "label": y, "pred": p, "topk": [p], "probs": q})
                                        for k, y, p, q in rows]
        path.write_text("\n".join(lines) + "\n")
    return path


GOOD = [("c0", 0, 0, [0.9, 0.1]), ("c1", 1, 0, [0.6, 0.4]), ("c2", 1, 1, [0.2, 0.8]), ("c3", 0, 1, [0.3, 0.7])]


def _compare(*paths, extra=()):
    groups = [f"g{i}={p}" for i, p in enumerate(paths)]
    return CliRunner().invoke(main, ["compare", *groups, "--bootstrap", "200", *extra])


@pytest.mark.parametrize("fmt,line", [("jsonl", "line 3"), ("csv", "line 4"), ("json", "predictions[1]")])
def test_nan_probabilities_are_refused_naming_the_row(tmp_path, fmt, line):
    good = _write(tmp_path / f"good.{fmt}", GOOD, fmt)
    rows = list(GOOD)
    rows[1] = ("c1", 1, 0, [float("nan"), float("nan")])  # argmax(NaN) = 0: would have counted as a guess
    bad = _write(tmp_path / f"bad.{fmt}", rows, fmt)
    count("bad prediction row")
    assert_clean_error(_compare(good, bad), str(bad), line, "c1", "NaN")


@pytest.mark.parametrize("row,needle", [
    (("c1", 1, 1, [0.6, 0.4]), "not the most probable class"),  # pred disagrees with its probabilities
    (("c1", 1, 5, [0.6, 0.4]), "pred 5 is not one of the 2 classes"),
    (("c1", 7, 0, [0.6, 0.4]), "label 7 is not one of the 2 classes"),
    (("c1", 1, 0, [1.6, -0.6]), "not a distribution"),
])
def test_inconsistent_rows_are_refused(tmp_path, row, needle):
    rows = list(GOOD)
    rows[1] = row  # in both files: they agree on keys and labels, so only the row check can refuse them
    a, b = _write(tmp_path / "a.jsonl", rows), _write(tmp_path / "b.jsonl", rows)
    count("bad prediction row")
    assert_clean_error(_compare(a, b), "line 3", needle)


def test_the_same_run_in_both_groups_is_noted(tmp_path):
    good = _write(tmp_path / "good.jsonl", GOOD)
    r = _compare(good, good)
    assert r.exit_code == 0, r.output
    assert "one run compared with itself" in r.output


def test_few_bootstrap_replicates_for_the_level_are_warned(tmp_path):
    a = _write(tmp_path / "a.jsonl", GOOD)
    b = _write(tmp_path / "b.jsonl", [(k, y, 1 - p, q[::-1]) for k, y, p, q in GOOD])
    r = CliRunner().invoke(main, ["compare", f"a={a}", f"b={b}", "--bootstrap", "100", "--alpha", "0.0001"])
    assert r.exit_code == 0, r.output
    assert "--bootstrap 200000" in r.output and "99.99% CI" in r.output
    r = CliRunner().invoke(main, ["compare", f"a={a}", f"b={b}", "--bootstrap", "2000"])
    assert "warning" not in r.output


def test_balanced_wins_and_losses_are_not_called_no_difference(tmp_path):
    a = _write(tmp_path / "a.jsonl", GOOD)  # right on c0, c2
    b = _write(tmp_path / "b.jsonl", [("c0", 0, 1, [0.4, 0.6]), ("c1", 1, 1, [0.1, 0.9]), ("c2", 1, 0, [0.7, 0.3]),
                                      ("c3", 0, 0, [0.9, 0.1])])  # right on c1, c3: 2 won, 2 lost
    r = CliRunner().invoke(main, ["compare", f"a={a}", f"b={b}", "--bootstrap", "200"])
    assert r.exit_code == 0, r.output
    assert "no difference observed" not in r.output and "balance, 2:2" in r.output


def test_a_checkpoint_given_as_a_run_is_named(tmp_path, ckpt):
    good = _write(tmp_path / "good.jsonl", GOOD)
    count("bad prediction file")
    assert_clean_error(_compare(good, ckpt), str(ckpt), "binary file")


def test_row_checks_accept_what_evaluate_writes(tmp_path):
    from dlkdd.predictions import from_logits, read_predictions, write_predictions

    rng = np.random.default_rng(0)
    for suffix in ("jsonl", "csv"):
        p = from_logits([f"k{i}" for i in range(20)], rng.integers(0, 2, 20), rng.normal(size=(20, 2)) * 30, CLASSES)
        got = read_predictions(write_predictions(tmp_path / f"p.{suffix}", p))
        assert np.array_equal(got.pred, p.pred)
