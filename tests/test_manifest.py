"""Manifest readers: official ARID / Dark-48 lists, arid6 (.avi -> .mp4), CSV, errors, hashing."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import shared_path
from dlkdd.config import DataConfig
from dlkdd.data.manifest import (Entry, Manifest, manifest_from_config, read_arid, read_csv, read_dark48)
from dlkdd.errors import DataError


@pytest.mark.parametrize("split", [1, 2, 3])
def test_official_arid_lists_disjoint_and_cover_dataset(split):
    d = shared_path("arid-lists")
    parts = [read_arid(d / f"ARID_split{split}_{s}.txt", d / "mapping_table.txt", "/nonexistent", check_files=False)
             for s in ("train", "test", "other")]
    keys = [set(m.keys()) for m in parts]
    assert all(len(k) == len(m) for k, m in zip(keys, parts))  # no duplicates inside a list
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert len(keys[0] | keys[1] | keys[2]) == 3784
    assert parts[0].classes == ["Drink", "Jump", "Pick", "Pour", "Push", "Run", "Sit", "Stand", "Turn", "Walk", "Wave"]
    # every label agrees with the class folder of its clip
    for m in parts:
        assert all(e.key.split("/")[0] == m.classes[e.label] for e in m)
    assert parts[0][0].key.startswith("Drink/Drink_") and parts[0][0].label == 0


def test_dark48_split1():
    d = shared_path("dark48-lists")
    tr = read_dark48(d / "train_split1.txt", d / "classInd.txt", "", check_files=False)
    te = read_dark48(d / "test_split1.txt", d / "classInd.txt", "", check_files=False)
    # 7051 / 1762 newline characters: the last line of each file has no newline, so 7052 / 1763 clips
    assert len(tr.classes) == 48 and (len(tr), len(te)) == (7052, 1763)
    assert set(tr.labels()) == set(range(48))
    assert all(e.key.split("/")[0] == tr.classes[e.label] for e in tr)
    assert not set(tr.keys()) & set(te.keys())


def test_arid6_split_resolves_avi_to_mp4():
    d = shared_path("arid6")
    cfg = DataConfig(format="arid", root=str(d / "clips"), train_list=str(d / "arid6_train.txt"),
                     test_list=str(d / "arid6_test.txt"), mapping=str(d / "mapping_table.txt"))
    tr, te = manifest_from_config(cfg, "train"), manifest_from_config(cfg, "test")
    assert (len(tr), len(te)) == (104, 46)  # the group-disjoint split (../shared/data/arid6/README)
    assert tr.class_counts() == [14, 19, 17, 20, 21, 13] and te.class_counts() == [11, 6, 8, 5, 4, 12]
    assert all(e.path.endswith(".mp4") and Path(e.path).is_file() for e in tr)
    assert tr[0].key == "Jump/Jump_8_1" and tr[0].source.endswith("arid6_train.txt:1")


def _arid(tmp_path: Path, lines: str, mapping="0\tJump\n1\tRun\n"):
    (tmp_path / "list.txt").write_text(lines)
    (tmp_path / "map.txt").write_text(mapping)
    return tmp_path / "list.txt", tmp_path / "map.txt"


def test_missing_video_error_names_list_line_and_paths(tmp_path):
    (tmp_path / "Jump").mkdir()
    (tmp_path / "Jump" / "a.mp4").write_bytes(b"x")
    lst, mp = _arid(tmp_path, "0\t0\tJump/a.avi\n1\t1\tRun/b.avi\n")
    with pytest.raises(DataError) as ei:
        read_arid(lst, mp, tmp_path)
    msg = str(ei.value)
    assert f"{lst}:2" in msg and "Run/b.avi" in msg and "Run/b.mp4" in msg and "Run/b.webm" in msg
    m = read_arid(lst, mp, tmp_path, check_files=False)  # lists only
    assert m[0].path.endswith("a.mp4") and m[1].path.endswith("b.avi")


@pytest.mark.parametrize("line", ["0\t0\n", "0\tx\tJump/a.avi\n", "junk\n"])
def test_unparsable_line_names_file_and_line(tmp_path, line):
    lst, mp = _arid(tmp_path, "0\t0\tJump/a.avi\n" + line)
    with pytest.raises(DataError, match=f"{lst}:2"):
        read_arid(lst, mp, tmp_path, check_files=False)


def test_label_out_of_range_and_bad_mapping(tmp_path):
    lst, mp = _arid(tmp_path, "0\t5\tJump/a.avi\n")
    with pytest.raises(DataError, match="out of range"):
        read_arid(lst, mp, tmp_path, check_files=False)
    lst, mp = _arid(tmp_path, "0\t0\tJump/a.avi\n", mapping="0\tJump\n2\tRun\n")
    with pytest.raises(DataError, match="ids must be 0..1"):
        read_arid(lst, mp, tmp_path, check_files=False)
    with pytest.raises(DataError, match="not found"):
        read_arid(tmp_path / "nope.txt", _arid(tmp_path, "")[1], tmp_path)


def test_dark48_bad_line(tmp_path):
    (tmp_path / "l.txt").write_text("a/b.mp4 0\na/c.mp4\n")
    (tmp_path / "c.txt").write_text("0\ta\n")
    with pytest.raises(DataError, match=r"l\.txt:2"):
        read_dark48(tmp_path / "l.txt", tmp_path / "c.txt", tmp_path, check_files=False)


def test_csv_names_and_ints(tmp_path):
    for n in ("x/a.mp4", "y/b.mp4", "y/c.mp4"):
        (tmp_path / n).parent.mkdir(exist_ok=True)
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "tr.csv").write_text("path,label\nx/a.mp4,walk\ny/b.mp4,jump\n")
    (tmp_path / "te.csv").write_text("path,label\ny/c.mp4,run\n")
    m = read_csv(tmp_path / "tr.csv")  # root: the CSV's folder
    assert m.classes == ["jump", "walk"] and m.labels() == [1, 0] and m.keys() == ["x/a", "y/b"]
    cfg = DataConfig(format="csv", root=str(tmp_path), train_list=str(tmp_path / "tr.csv"),
                     test_list=str(tmp_path / "te.csv"))
    tr, te = manifest_from_config(cfg, "train"), manifest_from_config(cfg, "test")
    assert tr.classes == te.classes == ["jump", "run", "walk"] and te.labels() == [1]
    (tmp_path / "i.csv").write_text("path,label\nx/a.mp4,2\ny/b.mp4,0\n")
    assert read_csv(tmp_path / "i.csv").classes == ["0", "1", "2"]
    (tmp_path / "bad.csv").write_text("path,label\nx/a.mp4,walk\nx/a.mp4\n")
    with pytest.raises(DataError, match=r"bad\.csv:3"):
        read_csv(tmp_path / "bad.csv")
    (tmp_path / "nohdr.csv").write_text("x/a.mp4,walk\n")
    with pytest.raises(DataError, match="header"):
        read_csv(tmp_path / "nohdr.csv")


def test_sha256_root_independent_and_order_sensitive():
    es = [Entry("A/a_1", "/r1/A/a_1.mp4", 0), Entry("B/b_1", "/r1/B/b_1.mp4", 1)]
    m1 = Manifest(es, ["A", "B"], "/r1")
    m2 = Manifest([Entry(e.key, e.path.replace("/r1", "/elsewhere").replace(".mp4", ".avi"), e.label) for e in es],
                  ["A", "B"], "/elsewhere")
    assert m1.sha256() == m2.sha256()
    assert Manifest(es[::-1], ["A", "B"]).sha256() != m1.sha256()
    assert Manifest(es, ["A", "C"]).sha256() != m1.sha256()
    assert m1.without(["A/a_1"]).keys() == ["B/b_1"] and m1.subset([1, 0]).keys() == ["B/b_1", "A/a_1"]
    with pytest.raises(DataError, match="twice"):
        Manifest(es + es[:1], ["A", "B"])
