"""``dlkdd data check`` and ``dlkdd synth`` through click's CliRunner; bad-clip policy."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import shared_path
from dlkdd.cli import main
from dlkdd.config import load_config
from dlkdd.data.check import check_dataset
from dlkdd.data.prepare import apply_bad_clip_policy
from dlkdd.data.manifest import read_csv
from dlkdd.errors import DataError

BAD = ["audio_only.mp4", "corrupted.mp4", "empty.mp4", "not_a_video.mp4", "truncated.mp4"]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    r = CliRunner().invoke(main, ["synth", str(out), "--classes", "2", "--clips-per-class", "3", "--frames", "10",
                                  "--height", "32", "--width", "48"])
    assert r.exit_code == 0, r.output
    assert (out / "config.yaml").is_file() and (out / "clips" / "Jump").is_dir()
    return out


def _bad_csv(tmp_path: Path, good: Path) -> Path:
    bad = shared_path("bad")
    rows = [f"{bad / n},Jump" for n in BAD] + [f"{good},Jump", f"{tmp_path / 'gone.mp4'},Walk"]
    (tmp_path / "bad.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return tmp_path / "bad.csv"


def test_check_lists_every_bad_clip_without_traceback(tmp_path, synth_dir):
    good = next((synth_dir / "clips" / "Jump").glob("*.mp4"))
    csv_path = _bad_csv(tmp_path, good)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"format": "csv", "train_list": str(csv_path), "test_list": ""}}))
    r = CliRunner().invoke(main, ["data", "check", "--config", str(cfg), "--split", "train"])
    assert r.exit_code == 1
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    for n in BAD + ["gone.mp4"]:
        assert n in r.output, n
    for reason in ("no video stream", "corrupted stream", "empty file", "not a video", "truncated", "file not found"):
        assert reason in r.output, reason
    assert "6 bad clips" in r.output and "bad.csv:8" in r.output  # the missing file names its list line


def test_check_ok_and_write_stats(tmp_path, synth_dir):
    stats = tmp_path / "stats.yaml"
    r = CliRunner().invoke(main, ["data", "check", "--config", str(synth_dir / "config.yaml"),
                                  "--write-stats", str(stats)])
    assert r.exit_code == 0, r.output
    assert "all clips decode" in r.output and "frames (train): min 10, mean 10.0, max 10" in r.output
    snippet = yaml.safe_load(stats.read_text())
    assert snippet["model"]["normalize"] == "dataset"
    mean, std = snippet["model"]["mean"], snippet["model"]["std"]
    assert len(mean) == 3 and all(0.01 < m < 0.25 for m in mean) and all(s > 0 for s in std)  # dark
    cfg = load_config(synth_dir / "config.yaml", [f"model.mean={mean}", f"model.std={std}"])
    assert cfg.model.mean == pytest.approx(tuple(mean))
    rep = check_dataset(load_config(synth_dir / "config.yaml"), split="test", progress=False)
    assert rep.ok and list(rep.splits) == ["test"] and rep.mean is None
    with pytest.raises(DataError, match="no training-set statistics"):
        rep.stats_yaml()


def test_bad_clip_policy(tmp_path, synth_dir):
    good = next((synth_dir / "clips" / "Jump").glob("*.mp4"))
    m = read_csv(_bad_csv(tmp_path, good), check_files=False)
    with pytest.raises(DataError, match="bad clips") as ei:
        apply_bad_clip_policy(m, "error", progress=False)
    assert "on_bad_clip=skip" in str(ei.value)
    kept = apply_bad_clip_policy(m, "skip", progress=False, decode=True)
    assert kept.paths() == [str(good)]


def test_check_reports_list_errors_cleanly(tmp_path):
    (tmp_path / "l.txt").write_text("0\t0\n")
    (tmp_path / "m.txt").write_text("0\tJump\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"format": "arid", "train_list": str(tmp_path / "l.txt"),
                                            "mapping": str(tmp_path / "m.txt")}}))
    r = CliRunner().invoke(main, ["data", "check", "--config", str(cfg), "--split", "train"])
    assert r.exit_code == 1 and "l.txt:1" in r.output and "Traceback" not in r.output


def test_scan_decodes_each_unchanged_clip_once_per_process(tmp_path, synth_dir, monkeypatch):
    import shutil

    import dlkdd.data.check as check
    from dlkdd.data.manifest import Entry, Manifest

    src = sorted(Path(synth_dir).rglob("*.mp4"))[0]
    good, bad = tmp_path / "good.mp4", tmp_path / "bad.mp4"
    shutil.copy(src, good)
    bad.write_bytes(b"not a video")
    man = Manifest([Entry("good", str(good), 0), Entry("bad", str(bad), 0)], ["c"])
    opened = []
    real = check.VideoReader
    monkeypatch.setattr(check, "VideoReader", lambda p: (opened.append(Path(p).name), real(p))[1])
    assert [i for i, _ in check.scan_clips(man, progress=False, decode=True)] == [1]
    assert [i for i, _ in check.scan_clips(man, progress=False, decode=True)] == [1]  # a failure is never remembered
    assert opened == ["good.mp4", "bad.mp4", "bad.mp4"]
    good.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 3])  # changed on disk: scanned again, now bad
    assert [i for i, _ in check.scan_clips(man, progress=False, decode=True)] == [0, 1]
