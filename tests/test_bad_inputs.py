"""Bad input, end to end through the CLI: every one gives a clear error naming the file (and the
list line), never a traceback; training honours ``data.on_bad_clip``.

Inputs tried: each file of ``../shared/data/bad/`` (corrupt stream, truncated, empty, text named
``.mp4``, audio only), a missing file, a directory given as a video, a directory without read
permission, list lines that do not parse, a clip that fails inside a DataLoader worker, and a
training manifest holding all of those (``on_bad_clip: error`` stops before the first step listing
every bad clip; ``skip`` trains without them and records the skipped keys in the run's metrics,
checkpoint and logit-store metadata, and the student trains on that store).
"""
from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

import faults
from conftest import shared_path
from dlkdd.cli import main
from faults import assert_clean_error, cli, count, log_rows, sets

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)

BAD = {  # file in ../shared/data/bad -> what the error must say
    "corrupted.mp4": "corrupted stream",
    "truncated.mp4": "truncated",
    "empty.mp4": "empty file",
    "not_a_video.mp4": "not a video",
    "audio_only.mp4": "no video stream",
}


def _invoke(args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


# ------------------------------------------------------------------------------------ single files
@pytest.mark.parametrize("name", [*BAD, "missing.mp4", "a_directory"])
def test_bad_video_file_is_a_one_line_error_naming_it(name, work, ckpt):
    bad = shared_path("bad")
    if name in BAD:
        path, reason = bad / name, BAD[name]
    elif name == "missing.mp4":
        path, reason = work / "missing.mp4", "file not found"
    else:
        path, reason = work, "is a directory"
    count("bad input", 2)
    assert_clean_error(_invoke(["predict", ckpt, path]), str(path), reason)
    assert_clean_error(_invoke(["enhance", path, work / "out.mp4", "--kind", "gamma"]), str(path), reason)
    assert not (work / "out.mp4").exists()


def _unreadable_copy(work: Path, tiny: Path) -> Path:
    """A copy of the tiny set whose Jump/ directory has mode 000."""
    root = work / "locked"
    if not root.exists():
        shutil.copytree(tiny, root)
        cfg = (root / "config.yaml").read_text().replace(str(tiny), str(root))
        (root / "config.yaml").write_text(cfg)
    (root / "clips" / "Jump").chmod(0)
    return root


def test_unreadable_directory(work, tiny, ckpt):
    faults.skip_unless_permissions_enforced()
    root = _unreadable_copy(work, tiny)
    try:
        clip = root / "clips" / "Jump" / "Jump_1_1.mp4"
        locked = str(root / "clips" / "Jump")
        r = cli(["predict", ckpt, clip], unprivileged=True)
        assert_clean_error(r, str(clip), "permission denied", locked)
        r = cli(["teacher", "--config", root / "config.yaml", *sets(), "--out", work / "locked_run"], unprivileged=True)
        err = assert_clean_error(r, "bad training clip(s)")
        assert r.stderr.count("permission denied") >= 3 and "Jump_1_1" in r.stderr, r.stderr[-2000:]
        r = cli(["data", "check", "--config", root / "config.yaml"], unprivileged=True)
        assert r.returncode == 1 and "3 bad clips" in r.stdout and "permission denied" in r.stdout, r.stdout
        assert "Traceback" not in r.stdout + r.stderr and err
        cfg = root / "clips" / "Jump" / "c.yaml"
        r = cli(["teacher", "--config", cfg, "--out", work / "x"], unprivileged=True)
        assert_clean_error(r, str(cfg), "permission denied")
        count("bad input", 4)
    finally:
        (root / "clips" / "Jump").chmod(stat.S_IRWXU)


# ------------------------------------------------------------------------------------ list files
@pytest.mark.parametrize("line,needle", [
    ("garbage", "train.txt:5"),               # not index<TAB>label<TAB>path
    ("4\tseven\tJump/Jump_1_1.avi", "train.txt:5"),  # label not an int
    ("4\t9\tJump/Jump_1_1.avi", "train.txt:5"),      # label out of range
    ("4\t0\tJump/gone.avi", "train.txt:5"),   # a missing video (listed line named)
])
def test_bad_list_line_names_file_and_line(work, tiny, ckpt, line, needle):
    d = work / f"list_{abs(hash(line)) % 10**6}"
    shutil.copytree(tiny, d, ignore=shutil.ignore_patterns("clips"))
    text = (tiny / "train.txt").read_text().rstrip("\n") + f"\n{line}\n"
    (d / "train.txt").write_text(text)
    assert len(text.splitlines()) == 5
    cfg = {"data": {"format": "arid", "root": str(tiny / "clips"), "train_list": str(d / "train.txt"),
                    "test_list": str(tiny / "test.txt"), "mapping": str(tiny / "mapping_table.txt")}}
    (d / "c.yaml").write_text(json.dumps(cfg))
    count("bad input")
    if "gone" in line:  # training lists a missing video among the bad clips
        r = _invoke(["teacher", "--config", d / "c.yaml", *sets(), "--out", d / "run"])
        assert r.exit_code == 1 and "Traceback" not in r.output
        assert "1 bad training clip(s)" in r.output and "gone" in r.output and "file not found" in r.output
        assert needle in r.output
    else:
        assert_clean_error(_invoke(["teacher", "--config", d / "c.yaml", *sets(), "--out", d / "run"]), needle)
    # evaluate reads lists without a config too
    assert_clean_error(_invoke(["evaluate", ckpt, "--root", tiny / "clips", "--list", d / "train.txt",
                                "--mapping", tiny / "mapping_table.txt", "--workers", "0", "--no-progress"]),
                       needle)
    assert not (d / "run" / "last.pt").exists()


def test_bad_clip_in_evaluation_list_is_listed_not_scored(work, tiny, ckpt):
    """A corrupt clip decodes far enough for a centred view: evaluate must not score it silently."""
    d = work / "eval_bad"
    (d / "Jump").mkdir(parents=True)
    shutil.copy(shared_path("bad", "corrupted.mp4"), d / "Jump" / "corrupted.mp4")
    test = (tiny / "test.txt").read_text().rstrip("\n") + "\n2\t0\tJump/corrupted.avi\n"
    (d / "test.txt").write_text(test.replace("Jump/Jump", f"{tiny}/clips/Jump/Jump").replace(
        "Walk/Walk", f"{tiny}/clips/Walk/Walk"))
    args = ["evaluate", ckpt, "--root", d, "--list", d / "test.txt", "--mapping", tiny / "mapping_table.txt",
            "--workers", "0", "--no-progress"]
    count("bad input")
    assert_clean_error(_invoke(args), "1 bad clips", "corrupted.mp4", "corrupted stream")
    cfg = {"data": {"format": "arid", "root": str(d), "train_list": str(d / "test.txt"),
                    "test_list": str(d / "test.txt"), "mapping": str(tiny / "mapping_table.txt"),
                    "on_bad_clip": "skip"}}
    (d / "c.yaml").write_text(json.dumps(cfg))
    r = _invoke(["evaluate", ckpt, "--config", d / "c.yaml", "--workers", "0", "--no-progress",
                 "--json", d / "m.json"])
    assert r.exit_code == 0, r.output
    assert json.loads((d / "m.json").read_text())["n"] == 2


def test_error_inside_a_dataloader_worker_is_one_line():
    """A clip that breaks after the scan (deleted, overwritten) fails inside a worker process."""
    import click
    from torch.utils.data import DataLoader

    from dlkdd.commands.common import friendly_errors
    from dlkdd.errors import VideoError

    class Broken:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise VideoError("/data/Jump/Jump_1_1.mp4", "corrupted stream: decoding failed near frame 3")

    @click.command()
    @friendly_errors
    def run():
        list(DataLoader(Broken(), batch_size=None, num_workers=1))

    count("bad input")
    assert_clean_error(CliRunner().invoke(run, []), "/data/Jump/Jump_1_1.mp4: corrupted stream")


# ------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def messy(work, tiny) -> Path:
    """The tiny set plus every bad file and a missing one in the training list, one bad test clip."""
    d = work / "messy"
    shutil.copytree(tiny, d)
    bad = shared_path("bad")
    train = (d / "train.txt").read_text().rstrip("\n").splitlines()
    for j, name in enumerate(BAD):
        cls = ("Jump", "Walk")[j % 2]
        shutil.copy(bad / name, d / "clips" / cls / name)
        train.append(f"{len(train)}\t{j % 2}\t{cls}/{Path(name).stem}.avi")
    train.append(f"{len(train)}\t1\tWalk/gone.avi")
    (d / "train.txt").write_text("\n".join(train) + "\n")
    shutil.copy(bad / "empty.mp4", d / "clips" / "Walk" / "empty_test.mp4")
    (d / "test.txt").write_text((d / "test.txt").read_text().rstrip("\n") + "\n2\t1\tWalk/empty_test.avi\n")
    (d / "config.yaml").write_text((d / "config.yaml").read_text().replace(str(tiny), str(d)))
    return d


SKIPPED = sorted([f"Jump/{Path(n).stem}" if j % 2 == 0 else f"Walk/{Path(n).stem}" for j, n in enumerate(BAD)]
                 + ["Walk/gone"])


def test_on_bad_clip_error_stops_before_the_first_step_listing_every_bad_clip(work, messy):
    out = work / "messy_error"
    r = cli(["teacher", "--config", messy / "config.yaml", *sets(), "--out", out, "--no-progress"])
    count("bad input", 7)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "6 bad training clip(s) and 1 bad test clip(s)" in r.stderr
    for name, reason in BAD.items():
        assert f"{Path(name).name}: {reason}" in r.stderr, (name, r.stderr[-3000:])
    assert "gone.avi: file not found" in r.stderr and "[test]" in r.stderr and "empty_test.mp4" in r.stderr
    assert "data.on_bad_clip=skip" in r.stderr
    assert "epoch=" not in r.stderr and not (out / "last.pt").exists() and not log_rows(out)


def test_on_bad_clip_skip_trains_without_them_and_records_them(work, messy):
    from dlkdd.cache.store import LogitStore
    from dlkdd.train.checkpoint import load_checkpoint

    skip = sets(extra=["data.on_bad_clip=skip", "train.epochs=1", f"cache.dir={work / 'cache'}"])
    out = work / "messy_skip"
    r = cli(["teacher", "--config", messy / "config.yaml", *skip, "--out", out, "--no-progress"])
    count("bad input", 7)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipping 6 bad training and 1 bad test clip(s)" in r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert sorted(m["skipped_keys"]) == SKIPPED and m["num_skipped"] == 6
    assert m["val"]["n"] == 2  # the bad test clip is not scored
    extra = load_checkpoint(out / "teacher.pt")["extra"]
    assert sorted(extra["skipped_keys"]) == SKIPPED and extra["num_skipped"] == 6

    path_file = work / "messy_cache.txt"
    r = cli(["cache-logits", "--config", messy / "config.yaml", *skip, "--teacher", out / "teacher.pt",
             "--path-file", path_file, "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    with LogitStore.open(path_file.read_text().strip()) as s:
        assert sorted(s.meta["skipped_keys"]) == SKIPPED and s.meta["num_skipped"] == 6
        assert s.num_clips == 4 and not set(s.keys) & set(SKIPPED) and s.is_complete

    sout = work / "messy_student"
    r = cli(["student", "--config", messy / "config.yaml", *skip, "--cache-path-file", path_file,
             "--out", sout, "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    sm = json.loads((sout / "metrics.json").read_text())
    assert sorted(sm["skipped_keys"]) == SKIPPED and sm["num_skipped"] == 6 and sm["train"]["clips"] == 4
