"""``dlkdd synth`` replaces only the files its own record (``.dlkdd-synth.json``) says it wrote there,
unchanged since; anything else in the folder is kept, or the command refuses. It needs 2 clips per class."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

import faults
from dlkdd.cli import main
from faults import assert_clean_error, count

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)


def _invoke(args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)

SMALL = ["--clips-per-class", "2", "--frames", "4", "--height", "16", "--width", "16"]


def _synth(out, classes=3):
    return CliRunner().invoke(main, ["synth", str(out), "--classes", str(classes), *SMALL])


def test_resynth_keeps_the_users_files_and_drops_only_its_own(tmp_path):
    out = tmp_path / "syn"
    assert _synth(out, classes=3).exit_code == 0
    (out / "clips" / "MyOwn").mkdir()
    (out / "clips" / "MyOwn" / "x.mp4").write_bytes(b"mine")
    (out / "clips" / "Jump" / "notes.txt").write_text("notes")
    r = _synth(out, classes=2)  # Wave (class 3) is no longer part of the set
    assert r.exit_code == 0, r.output
    assert (out / "clips" / "MyOwn" / "x.mp4").read_bytes() == b"mine"
    assert (out / "clips" / "Jump" / "notes.txt").read_text() == "notes"
    assert not (out / "clips" / "Wave").exists()  # the previous set's own clips, and their emptied folder
    assert sorted(p.name for p in (out / "clips" / "Walk").iterdir()) == ["Walk_1_1.mp4", "Walk_1_2.mp4"]


def test_folder_with_a_copied_synth_config_is_never_wiped(tmp_path):
    src, dst = tmp_path / "syn", tmp_path / "mine"
    assert _synth(src).exit_code == 0
    (dst / "clips" / "Jump").mkdir(parents=True)
    shutil.copy(src / "config.yaml", dst / "config.yaml")
    (dst / "clips" / "Jump" / "Jump_1_1.mp4").write_bytes(b"my recording")
    count("synth over a user's folder")
    assert_clean_error(_synth(dst), "Jump_1_1.mp4", "not a file dlkdd synth wrote")
    assert (dst / "clips" / "Jump" / "Jump_1_1.mp4").read_bytes() == b"my recording"


def test_a_changed_clip_of_a_synth_set_is_kept(tmp_path):
    out = tmp_path / "syn"
    assert _synth(out).exit_code == 0
    clip = out / "clips" / "Jump" / "Jump_1_1.mp4"
    clip.write_bytes(b"edited")
    count("synth over a user's folder")
    assert_clean_error(_synth(out), "Jump_1_1.mp4", "changed since")
    assert clip.read_bytes() == b"edited"


def test_users_lists_in_a_new_folder_are_not_overwritten(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "train.txt").write_text("my list\n")
    count("synth over a user's folder")
    assert_clean_error(_synth(out), "train.txt")
    assert (out / "train.txt").read_text() == "my list\n"


def test_clips_as_a_symlink_is_one_line(tmp_path):
    out, elsewhere = tmp_path / "syn", tmp_path / "elsewhere"
    assert _synth(out).exit_code == 0
    shutil.move(out / "clips", elsewhere)
    (out / "clips").symlink_to(elsewhere)
    count("synth over a user's folder")
    assert_clean_error(_synth(out), "symbolic link")
    assert (elsewhere / "Jump").is_dir()


# ----------------------------------------------------------------------------------------------------

def test_synth_needs_two_clips_per_class_and_replaces_its_own_set(tmp_path):
    count("bad input", 2)
    r = _invoke(["synth", tmp_path / "s1", "--clips-per-class", "1"])
    assert r.exit_code == 2 and "--clips-per-class" in r.output
    out = tmp_path / "s"
    assert _invoke(["synth", out, "--classes", "3", "--clips-per-class", "2", "--frames", "4", "--height", "16",
                    "--width", "16"]).exit_code == 0
    assert _invoke(["synth", out, "--classes", "2", "--clips-per-class", "2", "--frames", "4", "--height", "16",
                    "--width", "16"]).exit_code == 0
    assert len(list((out / "clips").iterdir())) == 2  # no stale third class folder
    other = tmp_path / "mine"
    (other / "clips" / "Jump").mkdir(parents=True)
    (other / "clips" / "Jump" / "Jump_1_1.mp4").write_bytes(b"a clip of mine, with synth's name")
    r = _invoke(["synth", other, "--clips-per-class", "2"])
    assert r.exit_code == 1 and "not a file dlkdd synth wrote" in r.output
    assert (other / "clips" / "Jump" / "Jump_1_1.mp4").read_bytes() == b"a clip of mine, with synth's name"
