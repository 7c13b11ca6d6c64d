"""Training runs: what is checked before the first step (a usable training list, every class with training
clips), one run per ``--out`` (locks, also across processes), ``--resume`` guards (changed settings, more epochs
only where the schedule allows, another cached teacher), finished runs (not replaced; resumed into another
``--out``), Ctrl-C, and lock files (none left stale; a waiter follows a deleted one)."""
from __future__ import annotations

import hashlib
from pathlib import Path
import json
import os
import signal
import threading

import pytest
import torch
from click.testing import CliRunner

import faults
from dlkdd.cli import main
from faults import assert_clean_error, cli, count, sets

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)

ONE_EPOCH = ["train.epochs=1"]


def _invoke(args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def test_empty_training_list_stops_before_work(work, cfg, tiny):
    empty = work / "empty.txt"
    empty.write_text("")
    count("bad input", 2)
    assert_clean_error(_invoke(["teacher", "--config", cfg, *sets(), "--set", f"data.train_list={empty}",
                                "--out", work / "r_empty", "--no-progress"]), "no usable clip")
    assert not (work / "r_empty" / "teacher.pt").exists()
    # a class with no training clip (only the first class's lines kept)
    only_jump = work / "only_jump.txt"
    only_jump.write_text("".join(ln + "\n" for ln in (tiny / "train.txt").read_text().splitlines()
                                 if "Jump/" in ln))
    err = assert_clean_error(_invoke(["teacher", "--config", cfg, *sets(), "--set", f"data.train_list={only_jump}",
                                      "--out", work / "r_class", "--no-progress"]), "no training clip")
    assert (tiny / "mapping_table.txt").read_text().split()[3] in err  # the second class, named


def test_class_missing_from_test_list_warns(tiny, caplog):
    from dlkdd.data.manifest import read_arid
    from dlkdd.data.prepare import check_class_coverage

    train = read_arid(tiny / "train.txt", tiny / "mapping_table.txt", tiny / "clips")
    test = read_arid(tiny / "test.txt", tiny / "mapping_table.txt", tiny / "clips")
    test_jump = test.subset([i for i in range(len(test)) if test[i].label == 0])
    count("bad input")
    with caplog.at_level("WARNING"):
        check_class_coverage(train, test_jump, "train.txt", "test.txt")
    assert "no clip in the test list" in caplog.text and test.classes[1] in caplog.text


def test_second_run_on_a_held_out_is_refused(work, cfg):
    from dlkdd.cache.lock import WriterLock

    out = work / "held"
    out.mkdir()
    count("concurrent run")
    with WriterLock(out / "run", what=f"run directory {out}"):
        err = assert_clean_error(_invoke(["teacher", "--config", cfg, *sets(), "--out", out, "--no-progress"]),
                                 f"run directory {out}", "being written by another process", f"pid {os.getpid()}")
    assert "teacher.pt" not in err and not (out / "teacher.pt").exists()


def test_concurrent_runs_in_subprocesses(work, cfg):
    out = work / "twice"
    # the first run freezes itself before its first optimizer step (tests/stop_at.py), holding the lock
    with faults.Job(["teacher", "--config", cfg, *sets(extra=ONE_EPOCH), "--out", out, "--no-progress"],
                    work, "first", stop_at=("optimizer-step", 1)) as job:
        job.wait_stopped("the first run's first step")
        assert (out / "run.lock").exists()
        r = cli(["teacher", "--config", cfg, *sets(extra=ONE_EPOCH), "--out", out, "--no-progress"])
        count("concurrent run")
        assert_clean_error(r, "being written by another process", f"pid {job.pid}")
        job.signal(signal.SIGCONT)
        assert job.wait() == 0, job.output()
    assert (out / "teacher.pt").exists() and not (out / "run.lock").exists()


def test_resume_refuses_changed_settings(run, cfg):
    count("bad resume", 2)
    err = assert_clean_error(_invoke(["teacher", "--config", cfg, *sets(extra=ONE_EPOCH), "--set", "clip.size=24",
                                      "--out", run, "--resume", run, "--no-progress"]), "clip.size: 32", "24 now")
    assert "--resume" in err
    assert_clean_error(_invoke(["teacher", "--config", cfg, *sets(extra=ONE_EPOCH), "--set", "train.epochs=3",
                                "--out", run, "--resume", run, "--no-progress"]), "train.epochs: 1", "3 now",
                       "cosine schedule ends at lr 0")
    # a setting on the documented list may change
    r = _invoke(["teacher", "--config", cfg, *sets(extra=ONE_EPOCH), "--set", "train.workers=0", "--out", run,
                 "--resume", run, "--no-progress"])
    assert r.exit_code == 0, r.output


def test_more_epochs_only_with_a_schedule_that_allows_them(work, cfg):
    const = [*ONE_EPOCH, "train.schedule=constant"]
    out = work / "const"
    assert _invoke(["teacher", "--config", cfg, *sets(extra=const), "--out", out, "--no-progress"]).exit_code == 0
    count("bad resume")
    r = _invoke(["teacher", "--config", cfg, *sets(extra=[*const, "train.epochs=2"]), "--out", out, "--resume", out,
                 "--no-progress"])
    assert r.exit_code == 0, r.output
    hist = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [0, 1] and hist[0]["lr"] > 0
    assert hist[1]["lr"] == pytest.approx(hist[0]["lr"])  # not lr 0


def test_resume_refuses_another_cached_teacher():
    from dlkdd.errors import CheckpointError
    from dlkdd.train.rundir import check_resume_extra

    ck = {"extra": {"teacher_sha256": "a" * 64, "cache": "cache/a.zarr"}}
    check_resume_extra(ck, {"teacher_sha256": "a" * 64, "cache": "moved/a.zarr"}, "r/last.pt")
    count("bad resume")
    with pytest.raises(CheckpointError, match="teacher_sha256: aaaaaaaaaaaa in the checkpoint, bbbbbbbbbbbb now"):
        check_resume_extra(ck, {"teacher_sha256": "b" * 64}, "r/last.pt")


def test_finished_run_resumed_into_another_out(run, cfg, work, caplog):
    """The new ``--out`` is a whole run: its checkpoints, metrics and the test clips' predictions, which
    ``dlkdd compare`` reads (issue 25: it had no predictions.jsonl); the summary prints top-1 as a percentage."""
    new = work / "snew"
    count("bad resume")
    caplog.set_level("INFO", logger="dlkdd.train.fit")
    r = _invoke(["teacher", "--config", cfg, *sets(extra=ONE_EPOCH), "--out", new, "--resume", run,
                 "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (new / "teacher.pt").is_file() and (new / "last.pt").is_file() and (new / "metrics.json").is_file()
    a, b = torch.load(run / "teacher.pt", weights_only=True), torch.load(new / "teacher.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    from dlkdd.predictions import read_predictions

    old, got = read_predictions(run), read_predictions(new)
    assert got.keys == old.keys and (got.probs == old.probs).all() and got.meta["run"] == str(new)
    r = _invoke(["compare", f"old={run}", f"new={new}"])
    assert r.exit_code == 0, r.output
    top1 = json.loads((new / "metrics.json").read_text())["top1"]
    assert f"teacher checkpoint: {new / 'teacher.pt'} (val top-1 {top1:.2f}%)" in caplog.messages


def test_rerun_into_a_finished_out_is_refused(run, cfg):
    before = _sha(run / "teacher.pt")
    count("bad input")
    assert_clean_error(_invoke(["teacher", "--config", cfg, *sets(extra=ONE_EPOCH), "--out", run, "--no-progress"]),
                       "already holds a run", f"--resume {run}", "another --out")
    assert _sha(run / "teacher.pt") == before


def test_ctrl_c_says_how_to_resume(tmp_path):
    import click

    from dlkdd.commands.common import friendly_errors

    @friendly_errors
    def train(out, resume):
        raise KeyboardInterrupt

    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(click.ClickException, match=f"--resume {tmp_path}"):
        train(out=str(tmp_path), resume=None)


def test_no_stale_lock_files(run, store):
    assert not (run / "run.lock").exists()
    assert not store.with_name(store.name + ".lock").exists()


def test_lock_waiter_follows_a_deleted_lock_file(tmp_path):
    """A waiter blocked on a lock file its holder deletes at release must not believe it holds the lock."""
    from dlkdd.cache.lock import WriterLock, lock_path

    a = WriterLock(tmp_path / "s.zarr").acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(WriterLock(tmp_path / "s.zarr", wait=True, timeout=20).acquire()))
    t.start()
    a.release()
    t.join(30)
    b = got[0]
    assert b.held and lock_path(tmp_path / "s.zarr").exists()
    count("concurrent run")
    with pytest.raises(Exception, match="being written by another process"):
        WriterLock(tmp_path / "s.zarr").acquire()  # b's lock is on the file at the path
    b.release()
    assert not lock_path(tmp_path / "s.zarr").exists()
