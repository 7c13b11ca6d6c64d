"""The data-format table (dlkdd.data.formats) and the folders format: root/<class>/<video>, split
by recording. On a synth set rearranged into folders and on real arid6 clips (symlinks)."""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO, shared_path
from dlkdd.config import config_from_dict, load_config
from dlkdd.config_sections import ConfigError
from dlkdd.data.formats import FOLDERS_GROUP_REGEX, FORMATS, data_format, list_formats
from dlkdd.data.groups import group_of, read_list, write_list
from dlkdd.data.manifest import manifest_from_config
from dlkdd.errors import DataError


@pytest.mark.parametrize("key,group", [("Jump/Jump_8_3", "Jump_8"), ("Run/clip01", "clip01"),
                                       ("Sit/take_1", "take_1"), ("a/b_c_12_4", "b_c_12"), ("x_2_5", "x_2")])
def test_folders_recording_rule(key, group):
    assert group_of(key, re.compile(FOLDERS_GROUP_REGEX)) == group


def test_the_table_drives_validation_and_the_list_formats():
    assert list_formats() == ["arid", "dark48", "csv"] and "folders" in FORMATS
    with pytest.raises(ConfigError, match="data.format.*folders"):
        config_from_dict({"data": {"format": "avi"}})
    with pytest.raises(DataError, match="no list files"):
        read_list("x.txt", "folders")
    assert data_format("folders").has_split(config_from_dict({}).data, "test")


def _folders(tmp_path: Path, src: Path, pick=lambda p: True) -> Path:
    """``src/<class>/<video>`` linked into ``tmp_path/folders/<class>/<video>``."""
    root = tmp_path / "folders"
    for f in sorted(src.glob("*/*.mp4")):
        if pick(f):
            (root / f.parent.name).mkdir(parents=True, exist_ok=True)
            (root / f.parent.name / f.name).symlink_to(f.resolve())
    return root


def _split(cfg):
    return manifest_from_config(cfg.data, "train"), manifest_from_config(cfg.data, "test")


def test_folders_on_a_synth_set_with_only_format_and_root_set(tmp_path, caplog):
    """The contract: --set data.format=folders --set data.root=DIR on a preset, nothing else; the preset's
    lists and mapping are ignored with a note; the split is seeded, stratified and recording-disjoint."""
    from dlkdd.data.synth import make_synthetic

    paths = make_synthetic(tmp_path / "synth", classes=3, clips_per_class=6, frames=8, size=(32, 32))
    root = tmp_path / "plain"
    for f in sorted(Path(paths["root"]).glob("*/*.mp4")):  # names without recordings: each its own
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / f.parent.name / f"video{f.stem.rsplit('_', 1)[1]}.MP4")
    (root / "empty").mkdir()  # no videos: not a class
    (root / "Jump" / "notes.txt").write_text("not a video")
    cfg = load_config(REPO / "configs" / "arid6-mini.yaml", overrides=["data.format=folders", f"data.root={root}"])
    assert cfg.data.train_list  # the preset's lists stay set, and are ignored
    with caplog.at_level(logging.INFO, logger="dlkdd.data.folders"):
        train, test = _split(cfg)
    assert "ignored" in caplog.text and "data.train_list" in caplog.text
    assert train.classes == test.classes == ["Jump", "Walk", "Wave"]
    assert set(train.keys()).isdisjoint(test.keys()) and len(train) + len(test) == 18
    assert [test.class_counts()[c] for c in range(3)] == [2, 2, 2]  # 30% of 6, whole recordings
    assert all(Path(e.path).is_file() for e in train)
    again = _split(cfg)
    assert again[0].keys() == train.keys()  # seeded: the same split every time (teacher, cache, student)
    other = _split(cfg.replace(**{"data.split_seed": 1}))
    assert other[1].keys() != test.keys() or other[0].keys() != train.keys()
    # the ARID-named synth clips: recordings of 2 clips each go whole to one side
    cfg2 = cfg.replace(**{"data.root": paths["root"]})
    tr2, te2 = _split(cfg2)
    groups = lambda m: {group_of(k, re.compile(FOLDERS_GROUP_REGEX)) for k in m.keys()}  # noqa: E731
    assert groups(tr2).isdisjoint(groups(te2)) and len(te2) == 6


def test_folders_end_to_end_check_cli(tmp_path):
    """`dlkdd data check` on a preset with the two settings: decodes both sides, reports no leakage."""
    from dlkdd.cli import main

    arid6 = shared_path("arid6", "clips")
    root = _folders(tmp_path, arid6, pick=lambda f: f.stem.rsplit("_", 1)[1] in ("1", "2", "3"))
    r = CliRunner().invoke(main, ["data", "check", "--config", str(REPO / "configs" / "arid6-mini.yaml"),
                                  "--set", "data.format=folders", "--set", f"data.root={root}"])
    assert r.exit_code == 0, r.output
    assert "none shared" in r.output


def test_folders_on_real_arid6_clips_is_recording_disjoint(tmp_path):
    arid6 = shared_path("arid6", "clips")
    root = _folders(tmp_path, arid6)
    cfg = config_from_dict({"data": {"format": "folders", "root": str(root)}})
    train, test = _split(cfg)
    pattern = re.compile(FOLDERS_GROUP_REGEX)
    g_tr = {group_of(k, pattern) for k in train.keys()}
    g_te = {group_of(k, pattern) for k in test.keys()}
    assert g_tr and g_te and g_tr.isdisjoint(g_te)
    assert train.classes == ["Jump", "Run", "Sit", "Stand", "Turn", "Walk"]
    assert all(n > 0 for n in test.class_counts())
    assert 0.2 < len(test) / (len(train) + len(test)) < 0.4


def test_folders_errors_name_the_fix(tmp_path):
    cfg = config_from_dict({"data": {"format": "folders", "root": str(tmp_path)}})
    with pytest.raises(DataError, match="no class folder with videos"):
        manifest_from_config(cfg.data, "train")
    with pytest.raises(DataError, match="needs data.root"):
        manifest_from_config(cfg.replace(**{"data.root": ""}).data, "train")


@pytest.mark.parametrize("fmt", ["arid", "dark48", "csv"])
def test_list_rows_round_trip_through_the_table(tmp_path, fmt):
    lines = {"arid": ["0\t1\tRun/Run_1_2.avi", "1\t0\tJump/Jump_3_1.avi"],
             "dark48": ["Run/a.mp4 1", "Jump/b.mp4 0"],
             "csv": ["path,label", "Run/a.mp4,Run", "Jump/b.mp4,Jump"]}[fmt]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n")
    rows, header = read_list(src, fmt)
    assert [r.key for r in rows] == (["Run/Run_1_2", "Jump/Jump_3_1"] if fmt == "arid" else ["Run/a", "Jump/b"])
    write_list(tmp_path / "out.txt", rows[::-1], fmt, header)
    back, _ = read_list(tmp_path / "out.txt", fmt)
    assert [r.key for r in back] == [r.key for r in rows[::-1]]
