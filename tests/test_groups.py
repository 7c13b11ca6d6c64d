"""Recording groups (dlkdd/data/groups.py): parsing, the leakage check of `dlkdd data check`,
and `dlkdd data split --by-group` (stratified, group-disjoint, deterministic)."""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import shared_path
from dlkdd.cli import main
from dlkdd.config import ConfigError, load_config
from dlkdd.data.groups import (ARID_GROUP_REGEX, compile_group_regex, find_shared_groups, group_of, group_split,
                               read_list, write_list)
from dlkdd.data.manifest import read_arid
from dlkdd.errors import DataError

ARID = re.compile(ARID_GROUP_REGEX)


def test_arid_group_of_key():
    assert group_of("Jump/Jump_8_3", ARID) == "Jump_8"
    assert group_of("Jump_11_14", ARID) == "Jump_11"
    assert group_of("a/b/Walk_14_1", ARID) == "Walk_14"
    with pytest.raises(DataError, match="does not match the group regex"):
        group_of("Jump/Jump", ARID)


def test_custom_regex_named_first_and_whole_match():
    assert group_of("v_Biking_g07_c03", re.compile(r"_g(?P<group>\d+)_")) == "07"
    assert group_of("v_Biking_g07_c03", re.compile(r"(g\d+)")) == "g07"
    assert group_of("person12/clip3", re.compile(r"^[^/]+")) == "person12"


def test_group_regex_config_key_is_validated():
    assert load_config(None, ["data.group_regex=_g(?P<group>[0-9]+)_"]).data.group_regex == "_g(?P<group>[0-9]+)_"
    with pytest.raises(ConfigError, match="data.group_regex.*not a valid regular expression"):
        load_config(None, ["data.group_regex=(unclosed"])
    with pytest.raises(ValueError):
        compile_group_regex("[")


def _keys(path):
    return [r.key for r in read_list(path, "arid")[0]]


@pytest.mark.parametrize("split", [1, 2, 3])
def test_official_arid_splits_share_no_group(split):
    d = shared_path("arid-lists")
    leak = find_shared_groups(_keys(d / f"ARID_split{split}_train.txt"), _keys(d / f"ARID_split{split}_test.txt"), ARID)
    assert leak.ok, list(leak.shared)[:5]
    assert leak.train_groups > 50 and leak.test_groups > 10
    assert "none shared" in leak.lines()[0]


def test_arid6_lists_share_no_group():
    d = shared_path("arid6")
    m_tr = read_arid(d / "arid6_train.txt", d / "mapping_table.txt", d / "clips")
    m_te = read_arid(d / "arid6_test.txt", d / "mapping_table.txt", d / "clips")
    leak = find_shared_groups(m_tr.keys(), m_te.keys(), ARID)
    assert leak.ok
    assert (leak.train_groups, leak.test_groups) == (9, 6)  # 15 recordings in all


def old_arid6_split(d, seed=0):
    """The old arid6 lists (108 train / 42 test, clips drawn at random): per class 7 of its 25 clips
    to test, each from a group that keeps other clips in training. Built from the current lists at
    test time (the clip names stay in ../shared)."""
    rows = read_list(d / "arid6_train.txt")[0] + read_list(d / "arid6_test.txt")[0]
    rng = np.random.default_rng(seed)
    train, test = [], []
    for lab in sorted({r.label for r in rows}):
        cls = [r for r in rows if r.label == lab]
        seen, movable = set(), []  # the first clip of each group stays in training
        for i, r in enumerate(cls):
            g = group_of(r.key, ARID)
            if g in seen:
                movable.append(i)
            seen.add(g)
        pick = set(rng.choice(movable, 7, replace=False).tolist())
        test += [r for i, r in enumerate(cls) if i in pick]
        train += [r for i, r in enumerate(cls) if i not in pick]
    return train, test


def test_old_arid6_split_is_flagged(tmp_path):
    d = shared_path("arid6")
    train, test = old_arid6_split(d)
    assert (len(train), len(test)) == (108, 42)
    leak = find_shared_groups([r.key for r in train], [r.key for r in test], ARID)
    assert not leak.ok
    # every test clip's recording gave training clips too (as in the old lists)
    assert leak.leaked_test_clips == 42
    text = "\n".join(leak.lines())
    assert "LEAKAGE" in text and "42 of 42 test clips" in text


def test_hand_written_leaky_lists(tmp_path):
    train = ["Jump/Jump_1_1", "Jump/Jump_1_2", "Jump/Jump_2_1", "Run/Run_1_1", "Run/Run_3_1"]
    test = ["Jump/Jump_1_3", "Jump/Jump_4_1", "Run/Run_3_2", "Run/Run_5_1"]
    leak = find_shared_groups(train, test, ARID)
    assert leak.shared == {"Jump_1": (2, 1), "Run_3": (1, 1)}
    assert leak.leaked_test_clips == 2 and (leak.train_groups, leak.test_groups) == (4, 4)


def _toy_rows(groups_per_class=(5, 4, 3), clips=(2, 3, 4, 5, 6)):
    keys, labels = [], []
    for c, ng in enumerate(groups_per_class):
        for g in range(ng):
            for n in range(clips[(g + c) % len(clips)]):
                keys.append(f"C{c}/C{c}_{g}_{n}")
                labels.append(c)
    return keys, labels


def test_group_split_is_disjoint_stratified_and_seeded():
    keys, labels = _toy_rows()
    res = group_split(keys, labels, 0.3, ARID, seed=3)
    assert sorted(res.train + res.test) == list(range(len(keys)))
    leak = find_shared_groups([keys[i] for i in res.train], [keys[i] for i in res.test], ARID)
    assert leak.ok
    n = Counter(labels)
    te = Counter(labels[i] for i in res.test)
    tr = Counter(labels[i] for i in res.train)
    for c in n:  # every class on both sides, near the asked share (whole groups of at most 6 clips)
        assert te[c] >= 1 and tr[c] >= 1
        assert abs(te[c] - 0.3 * n[c]) <= 6
    again = group_split(keys, labels, 0.3, ARID, seed=3)
    assert again.test == res.test
    others = {tuple(group_split(keys, labels, 0.3, ARID, seed=s).test) for s in range(8)}
    assert len(others) > 1  # the seed decides which groups


def test_group_split_single_group_class_stays_in_training():
    keys = ["A/A_1_1", "A/A_1_2", "B/B_1_1", "B/B_2_1"]
    res = group_split(keys, [0, 0, 1, 1], 0.5, ARID)
    assert res.test == [2] or res.test == [3]
    assert any("single recording group" in w for w in res.warnings)


def test_split_cli_on_arid6_is_group_disjoint(tmp_path):
    d = shared_path("arid6")
    rows = read_list(d / "arid6_train.txt")[0] + read_list(d / "arid6_test.txt")[0]
    full = tmp_path / "all.txt"
    write_list(full, rows)
    args = ["data", "split", "--by-group", str(full), "--test-fraction", "0.3", "--out-train",
            str(tmp_path / "tr.txt"), "--out-test", str(tmp_path / "te.txt"), "--seed", "1"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    tr, te = read_list(tmp_path / "tr.txt")[0], read_list(tmp_path / "te.txt")[0]
    assert len(tr) + len(te) == 150
    assert find_shared_groups([x.key for x in tr], [x.key for x in te], ARID).ok
    assert {x.label for x in te} == {str(i) for i in range(6)}
    assert (tmp_path / "te.txt").read_text().splitlines()[0].startswith("0\t")  # re-indexed
    first = (tmp_path / "te.txt").read_text()
    assert CliRunner().invoke(main, args).exit_code == 0
    assert (tmp_path / "te.txt").read_text() == first  # deterministic
    r = CliRunner().invoke(main, args[:2] + args[3:])
    assert r.exit_code != 0 and "--by-group" in r.output


def test_data_check_flags_shared_groups(tmp_path):
    """`dlkdd data check` on tiny real videos: synth's lists share recordings (flagged); a
    `data split --by-group` of them does not."""
    from dlkdd.data.synth import make_synthetic

    p = make_synthetic(tmp_path / "s", classes=2, clips_per_class=6, frames=4, size=(32, 32))
    base = ["data", "check", "--config", p["config"], "--stats-frames", "1"]
    r = CliRunner().invoke(main, base)
    assert r.exit_code == 0, r.output
    assert "WARNING: LEAKAGE" in r.stdout and "LEAKAGE" in r.stderr
    rows = read_list(p["train_list"])[0] + read_list(p["test_list"])[0]
    write_list(tmp_path / "all.txt", rows)
    r = CliRunner().invoke(main, ["data", "split", "--by-group", str(tmp_path / "all.txt"), "--test-fraction", "0.34",
                                  "--out-train", str(tmp_path / "tr.txt"), "--out-test", str(tmp_path / "te.txt")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, base + ["--set", f"data.train_list={tmp_path / 'tr.txt'}",
                                                         "--set", f"data.test_list={tmp_path / 'te.txt'}"])
    assert r.exit_code == 0, r.output
    assert "none shared" in r.output and "LEAKAGE" not in r.output + r.stderr


@pytest.mark.parametrize("fmt,text", [
    ("dark48", "walk/v_walk_g01_c01.mp4 3\nwalk/v_walk_g02_c01.mp4 3\nrun/v_run_g01_c02.mp4 1\n"),
    ("csv", "path,label\nwalk/v_walk_g01_c01.mp4,walk\nwalk/v_walk_g02_c01.mp4,walk\nrun/v_run_g01_c02.mp4,run\n"),
    ("arid", "0\t3\tWalk/Walk_1_1.avi\n1\t3\tWalk/Walk_2_1.avi\n2\t1\tRun/Run_1_2.avi\n"),
])
def test_list_files_round_trip(tmp_path, fmt, text):
    src = tmp_path / "in.txt"
    src.write_text(text)
    rows, header = read_list(src, fmt)
    assert [r.key for r in rows][0] in ("walk/v_walk_g01_c01", "Walk/Walk_1_1")
    write_list(tmp_path / "out.txt", [rows[2], rows[0]], fmt, header)
    back, _ = read_list(tmp_path / "out.txt", fmt)
    assert [r.key for r in back] == [rows[2].key, rows[0].key] and [r.label for r in back] == [rows[2].label, rows[0].label]
    pattern = re.compile(r"_g(?P<group>[0-9]+)_") if fmt != "arid" else ARID
    assert group_of(rows[0].key, pattern) != group_of(rows[1].key, pattern)


def test_leakage_for_config_default_and_explicit_regex():
    from dlkdd.config import DataConfig
    from dlkdd.data.groups import leakage_for_config

    assert leakage_for_config(DataConfig(format="arid"), ["A/A_1_1"], ["A/A_1_2"]).shared == {"A_1": (1, 1)}
    assert leakage_for_config(DataConfig(format="dark48"), ["a/x"], ["a/y"]) is None
    # keys in another naming scheme: the default ARID regex does not fit -> reported, not fatal
    un = leakage_for_config(DataConfig(format="arid"), ["A/clipone"], ["A/cliptwo"])
    assert un.ok and "not checked" in un.lines()[0] and "data.group_regex" in un.lines()[0]
    with pytest.raises(DataError, match="does not match the group regex"):
        leakage_for_config(DataConfig(format="arid", group_regex=r"_g(\d+)_"), ["A/clipone"], ["A/cliptwo"])
    got = leakage_for_config(DataConfig(format="csv", group_regex=r"([a-z]+)\d"), ["A/p1x", "A/q2"], ["A/p3"])
    assert got.shared == {"p": (1, 1)}


def test_pick_test_groups_is_near_optimal_and_seeded():
    from itertools import combinations

    from dlkdd.data.groups import _pick_test_groups

    sizes = [12, 13, 3, 4, 5, 1, 9]
    target = 0.3 * sum(sizes)  # 14.1
    best = min(abs(sum(c) - target) for r in range(1, len(sizes)) for c in combinations(sizes, r))
    picks = set()
    for seed in range(20):
        got = _pick_test_groups(sizes, target, np.random.default_rng(seed))
        assert 0 < len(got) < len(sizes)
        assert abs(sum(sizes[j] for j in got) - target) <= best + max(1.0, 0.05 * sum(sizes))
        picks.add(tuple(got))
    assert len(picks) > 3  # many near-best subsets: the seed chooses among them
    assert _pick_test_groups(sizes, target, np.random.default_rng(4)) == _pick_test_groups(
        sizes, target, np.random.default_rng(4))
    # more groups than the exhaustive limit: the greedy fallback still keeps a group on each side
    g = _pick_test_groups([2] * 10, 6.0, np.random.default_rng(0), exhaustive_max=4)
    assert len(g) == 3
    assert len(_pick_test_groups([5, 5], 9.0, np.random.default_rng(0), exhaustive_max=1)) == 1
