"""`dlkdd compare` (dlkdd/compare.py): statistics against textbook cases, the report on constructed
predictions, the refusals, and the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from dlkdd.cli import main
from dlkdd.compare import (CompareError, binomial_above_chance, check_comparable, compare_groups, mcnemar_exact,
                           mcnemar_sample_size, paired_bootstrap, seed_interval)
from dlkdd.predictions import Predictions, write_predictions

VIEWS = {"clips": 1, "crops": 1, "frames": 4, "stride": 2, "size": 32, "resize": 40}


def test_binomial_by_hand():
    # 10 of 20 right with 6 classes: P(X >= 10), X ~ Bin(20, 1/6)
    by_hand = sum(math.comb(20, k) * (1 / 6) ** k * (5 / 6) ** (20 - k) for k in range(10, 21))
    r = binomial_above_chance(10, 20, 6)
    assert r["p_value"] == pytest.approx(by_hand, rel=1e-9)
    assert r["p_value"] < 0.001 and r["chance"] == pytest.approx(1 / 6)
    # Clopper-Pearson 95% interval of 10/20: [0.2720, 0.7280] (tabulated)
    assert r["ci"] == pytest.approx([0.2720, 0.7280], abs=1e-4)
    # at chance level: 3 of 18 with 6 classes is not above chance
    assert binomial_above_chance(3, 18, 6)["p_value"] > 0.4


def test_mcnemar_exact_by_hand():
    # b=10, c=2: 2 * sum_{k<=2} C(12,k) / 2^12 = 2 * 79 / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096, rel=1e-12)
    assert round(mcnemar_exact(10, 2), 4) == 0.0386
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)


def test_paired_bootstrap_constructed():
    # every clip: A right, B wrong on exactly 30 of 100 clips, else both right
    a = np.ones(100)
    b = np.r_[np.zeros(30), np.ones(70)]
    r = paired_bootstrap(a, b, reps=20000, seed=1)
    assert r["diff"] == pytest.approx(0.30)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 100)  # normal approximation of the percentile interval
    assert r["ci"][0] == pytest.approx(0.30 - half, abs=0.02) and r["ci"][1] == pytest.approx(0.30 + half, abs=0.02)
    # a constant difference has a degenerate interval; the same seed gives the same interval
    assert paired_bootstrap(np.ones(10), np.zeros(10), reps=500)["ci"] == [1.0, 1.0]
    assert paired_bootstrap(a, b, reps=2000, seed=3) == paired_bootstrap(a, b, reps=2000, seed=3)
    with pytest.raises(ValueError):
        paired_bootstrap(np.ones(3), np.ones(4))


def test_paired_bootstrap_resamples_seeds():
    # A: one seed right on every clip, the other wrong on every clip; B always wrong. Resampling
    # clips changes nothing; resampling A's 2 seeds gives 0, 0.5 or 1 with probability 1/4, 1/2, 1/4
    a = np.stack([np.ones(50), np.zeros(50)])
    b = np.zeros((2, 50))
    r = paired_bootstrap(a, b, reps=4000, seed=0)
    assert r["diff"] == 0.5 and r["ci"] == [0.0, 1.0]
    pooled = paired_bootstrap(a.mean(0), b.mean(0), reps=4000, seed=0)
    assert pooled["diff"] == 0.5 and pooled["ci"] == [0.5, 0.5]
    # identical seeds: the two-level bootstrap equals the clip bootstrap
    one = np.r_[np.ones(20), np.zeros(30)]
    two = paired_bootstrap(np.stack([one, one]), np.zeros((3, 50)), reps=3000, seed=2)
    assert two["ci"] == pytest.approx(paired_bootstrap(one, np.zeros(50), reps=3000, seed=2)["ci"], abs=0.03)


def test_cluster_bootstrap_resamples_whole_recordings():
    # 4 recordings x 10 clips; A right on every clip of recordings 0 and 1, wrong on 2 and 3; B always
    # wrong. Resampling clips, 40 clips make a narrow interval around 0.5; resampling the 4 recordings,
    # the share of A's drawn clips that are right is Bin(4, 1/2) / 4: 0 and 1 each have probability
    # 1/16 > 2.5%, so the 95% interval is [0, 1] exactly
    rec = np.repeat(["r0", "r1", "r2", "r3"], 10)
    a = np.r_[np.ones(20), np.zeros(20)]
    b = np.zeros(40)
    clips = paired_bootstrap(a, b, reps=4000, seed=0)
    by_rec = paired_bootstrap(a, b, reps=4000, seed=0, clusters=rec)
    assert clips["diff"] == by_rec["diff"] == 0.5
    assert 0.3 < clips["ci"][0] and clips["ci"][1] < 0.7
    assert by_rec["ci"] == [0.0, 1.0]
    # one clip per recording: the clip bootstrap again (other random draws: within Monte Carlo error)
    one = np.r_[np.ones(20), np.zeros(30)]
    assert paired_bootstrap(one, np.zeros(50), reps=4000, seed=1, clusters=np.arange(50))["ci"] == pytest.approx(
        paired_bootstrap(one, np.zeros(50), reps=4000, seed=1)["ci"], abs=0.03)
    # seeds resampled as well; unequal recordings weigh by their clips: A right only on the 3-clip
    # recording of two -> drawn shares 0, 3/4 or 1
    two = paired_bootstrap(np.stack([np.r_[0.0, 1, 1, 1]] * 2), np.zeros((2, 4)), reps=3000, seed=2,
                           clusters=["x", "y", "y", "y"])
    assert two["diff"] == 0.75 and two["ci"] == [0.0, 1.0]
    with pytest.raises(ValueError, match="3 cluster labels for 4 clips"):
        paired_bootstrap(np.ones(4), np.zeros(4), clusters=["x", "y", "y"])


def test_compare_reports_the_recording_bootstrap_when_recordings_hold_several_clips():
    labels = np.arange(24) % 3
    keys = [f"C/C_{i // 6}_{i % 6}" for i in range(24)]  # 4 recordings of 6 clips
    a = [_pred(np.r_[np.ones(12), np.zeros(12)] > 0, labels, seed=0, keys=keys)]
    b = [_pred(np.zeros(24) > 0, labels, seed=0, keys=keys)]
    p = compare_groups({"b": b, "a": a}, reps=2000)["pairs"][0]
    assert p["verdict"] == "yes" and p["ci"][0] > 0  # clips resampled: 12 of 24 won, 0 lost
    rec = p["by_recording"]
    assert rec["recordings"] == 4 and rec["ci"] == [0.0, 100.0]
    assert rec["verdict"] == "cannot tell with this many recordings"
    from dlkdd.compare import format_report

    assert "resampling the 4 test recordings instead of clips" in format_report(
        compare_groups({"b": b, "a": a}, reps=500))
    # one clip per recording (the default keys): no second interval
    plain = compare_groups({"b": [_pred(np.zeros(24) > 0, labels)], "a": [_pred(np.ones(24) > 0, labels)]}, reps=200)
    assert plain["pairs"][0]["by_recording"] is None


def test_seed_interval_and_sample_size_by_hand():
    r = seed_interval([40.0, 50.0, 60.0])
    # mean 50, s = 10, t_{0.975,2} = 4.302653
    assert r["mean"] == 50.0 and r["std"] == pytest.approx(10.0)
    assert r["ci"] == pytest.approx([50 - 4.302653 * 10 / math.sqrt(3), 50 + 4.302653 * 10 / math.sqrt(3)], rel=1e-6)
    assert seed_interval([42.0])["ci"] is None
    # Connor 1987: p10 0.2, p01 0.1 -> psi 0.3, delta 0.1
    n = (1.959964 * math.sqrt(0.3) + 0.841621 * math.sqrt(0.3 - 0.01)) ** 2 / 0.01
    assert mcnemar_sample_size(0.2, 0.1) == pytest.approx(n, rel=1e-5)
    assert 233 < n < 234
    assert math.isinf(mcnemar_sample_size(0.1, 0.1))


def _pred(correct, labels, classes=3, seed=None, keys=None, views=VIEWS, path=""):
    """Predictions that are right exactly where ``correct`` says (wrong: the next class)."""
    labels = np.asarray(labels)
    pred = np.where(correct, labels, (labels + 1) % classes)
    probs = np.full((len(labels), classes), 0.1)
    probs[np.arange(len(labels)), pred] = 0.8
    probs /= probs.sum(1, keepdims=True)
    keys = keys or [f"K/K_{i}_1" for i in range(len(labels))]
    return Predictions(keys, labels, probs, [f"c{j}" for j in range(classes)], {"views": dict(views), "seed": seed},
                       path)


def test_compare_groups_constructed():
    n = 60
    labels = np.arange(n) % 3
    rng = np.random.default_rng(0)
    base = [_pred(rng.random(n) < 0.35, labels, seed=s) for s in (0, 1)]
    # the student is right on every clip the baseline of the same seed got, plus 20 more
    stud = []
    for s, b in zip((0, 1), base):
        c = b.correct.copy()
        c[np.flatnonzero(~c)[:20]] = True
        stud.append(_pred(c, labels, seed=s))
    r = compare_groups({"baseline": base, "student": stud}, reps=2000)
    assert r["pairs"][0]["seeds"] == "resampled" and "two-level" in r["pairs"][0]["bootstrap"]
    assert compare_groups({"baseline": base, "student": stud}, reps=500, seeds="pooled")["pairs"][0]["seeds"] == "pooled"
    mb, ms = r["models"]
    assert r["clips"] == n and r["chance"] == pytest.approx(100 / 3)
    assert mb["seeds"][0]["top1"] == pytest.approx(100 * base[0].correct.mean())
    assert ms["mean"] == pytest.approx(mb["mean"] + 100 * 20 / n)
    p = r["pairs"][0]
    assert (p["a"], p["b"]) == ("student", "baseline") and p["pairing"] == "by seed"
    assert [(s["a_only"], s["b_only"]) for s in p["mcnemar"]] == [(20, 0), (20, 0)]
    assert p["mcnemar"][0]["p"] == pytest.approx(2 * 0.5 ** 20)
    assert p["mcnemar_pooled"] == {"a_only": 40, "b_only": 0, "p": pytest.approx(2 * 0.5 ** 40)}
    assert p["diff"] == pytest.approx(100 * 20 / n) and p["ci"][0] > 0
    assert p["verdict"] == "yes" and p["sentence"] == "student better than baseline at 95%: yes"
    assert p["lost"] == 0 and p["won"] + p["tied"] == n
    # the same models the other way round: B is better
    r2 = compare_groups({"student": stud, "baseline": base}, reps=2000)
    assert r2["pairs"][0]["verdict"] == "no (student is better)"
    # two seeds of one model against each other on few clips: cannot tell
    few = compare_groups({"x": [_pred(np.r_[np.ones(6), np.zeros(6)] > 0, np.arange(12) % 3)],
                          "y": [_pred(np.r_[np.ones(5), np.zeros(7)] > 0, np.arange(12) % 3)]}, reps=2000)
    # seeds {0, 1} against {0, 1, 2}: paired by the seeds both have, not by position
    sub = compare_groups({"baseline": base + [_pred(np.ones(n) > 0, labels, seed=2)], "student": stud[::-1]}, reps=200)
    assert sub["pairs"][0]["pairing"] == "by seed, the 2 both have"
    assert [(s["seed_a"], s["seed_b"]) for s in sub["pairs"][0]["mcnemar"]] == [(0, 0), (1, 1)]
    assert [(s["a_only"], s["b_only"]) for s in sub["pairs"][0]["mcnemar"]] == [(20, 0), (20, 0)]
    fp = few["pairs"][0]
    assert fp["verdict"] == "cannot tell with this many clips" and fp["clips_needed"] > 12
    assert fp["pairing"].startswith("in the order given")
    json.dumps(r)


def test_refusals_name_the_difference():
    labels = np.arange(6) % 3
    ok = _pred(np.ones(6, bool), labels, path="a.jsonl")
    with pytest.raises(CompareError, match=r"clip lists differ.*1 only in the first \(K/K_9_1\)"):
        check_comparable({"a": [ok], "b": [_pred(np.ones(6, bool), labels, keys=[f"K/K_{i}_1" for i in (0, 1, 2, 3, 4, 9)],
                                                 path="b.jsonl")]})
    with pytest.raises(CompareError, match="class lists differ"):
        check_comparable({"a": [ok], "b": [_pred(np.ones(6, bool), labels, classes=4)]})
    with pytest.raises(CompareError, match="test views differ.*frames 8 vs 4"):
        check_comparable({"a": [ok], "b": [_pred(np.ones(6, bool), labels, views={**VIEWS, "frames": 8})]})
    with pytest.raises(CompareError, match="test views differ.*clips 2 vs 1"):
        check_comparable({"a": [ok], "b": [_pred(np.ones(6, bool), labels, views={**VIEWS, "clips": 2})]})
    with pytest.raises(CompareError, match="labels differ on 6 clips"):
        check_comparable({"a": [ok], "b": [_pred(np.ones(6, bool), (labels + 1) % 3)]})


def test_compare_cli(tmp_path):
    n = 40
    labels = np.arange(n) % 4
    rng = np.random.default_rng(5)
    for s in range(3):
        c = rng.random(n) < 0.3
        write_predictions(tmp_path / f"base-s{s}.jsonl", _pred(c, labels, classes=4, seed=s))
        c2 = c.copy()
        c2[np.flatnonzero(~c)[:15]] = True
        write_predictions(tmp_path / f"stud-s{s}.csv", _pred(c2, labels, classes=4, seed=s))
    r = CliRunner().invoke(main, ["compare", f"baseline={tmp_path}/base-s*", f"student={tmp_path}/stud-s*",
                                  "--json", str(tmp_path / "out.json"), "--plot", str(tmp_path / "out.png"),
                                  "--bootstrap", "1000"])
    assert r.exit_code == 0, r.output
    assert "student better than baseline at 95%: yes" in r.output
    rep = json.loads((tmp_path / "out.json").read_text())
    assert [m["k"] for m in rep["models"]] == [3, 3] and rep["pairs"][0]["pairing"] == "by seed"
    assert (tmp_path / "out.png").stat().st_size > 1000
    # refused: a run of another view spec
    write_predictions(tmp_path / "other.jsonl", _pred(np.ones(n, bool), labels, classes=4, views={**VIEWS, "size": 64}))
    r = CliRunner().invoke(main, ["compare", f"baseline={tmp_path}/base-s*", f"x={tmp_path}/other.jsonl"])
    assert r.exit_code == 1 and "test views differ" in r.output and "size 64 vs 32" in r.output
    r = CliRunner().invoke(main, ["compare", f"baseline={tmp_path}/nothing-*"])
    assert r.exit_code == 2 and "nothing matches" in r.output
    # --against: only the pairs with that earlier group (3 groups: 3 pairs, 2 of them against the baseline)
    three = [f"baseline={tmp_path}/base-s*", f"student={tmp_path}/stud-s*", f"again={tmp_path}/stud-s*"]
    r = CliRunner().invoke(main, ["compare", *three, "--bootstrap", "200", "--json", str(tmp_path / "a.json")])
    assert [(p["a"], p["b"]) for p in json.loads((tmp_path / "a.json").read_text())["pairs"]] == [
        ("student", "baseline"), ("again", "baseline"), ("again", "student")]
    r = CliRunner().invoke(main, ["compare", *three, "--bootstrap", "200", "--against", "baseline",
                                  "--json", str(tmp_path / "a.json")])
    assert r.exit_code == 0, r.output
    assert [(p["a"], p["b"]) for p in json.loads((tmp_path / "a.json").read_text())["pairs"]] == [
        ("student", "baseline"), ("again", "baseline")]
    r = CliRunner().invoke(main, ["compare", *three, "--against", "teacher"])
    assert r.exit_code == 2 and "'teacher' is not one of the groups (baseline, student, again)" in r.output


def test_recording_votes_majority_per_recording_ties_wrong_and_keys_without_groups():
    from dlkdd.compare import recording_votes

    keys = ["Jump/Jump_1_1", "Jump/Jump_1_2", "Jump/Jump_1_3", "Run/Run_4_1", "Run/Run_4_2", "Sit/Sit_2_1", "Sit/Sit_2_2"]
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 0, 2, 2, 2, 0])  # Jump: 2 of 3 say Jump; Run: all say Sit; Sit: a 1:1 tie
    r = recording_votes(keys, labels, pred)
    assert (r["n"], r["correct"]) == (3, 1)
    assert r["by_recording"]["Jump_1"] == {"label": 0, "vote": 0, "clips": 3, "clips_right": 2}
    assert r["by_recording"]["Run_4"]["vote"] == 2 and r["by_recording"]["Sit_2"]["vote"] is None
    assert recording_votes(["a", "b"], labels[:2], pred[:2]) is None  # no <Class>_<group>_<n> names
