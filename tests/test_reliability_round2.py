"""Reliability, round two (issue 16): what a hostile new user still broke, each fixed and tried here.

Bugs 1-11 of the issue, in order (one test or more each; the test names say which), then the warts:
an empty list or a class without training clips; unwritable outputs found before any work; a long
video scored over its whole length; a damaged logit store named as such (truncated/deleted chunk,
bit-flipped HDF5); a device this machine lacks; NaN weights; two runs on one ``--out``; a clip too
big for memory; ``--resume`` with changed settings; a finished run resumed into another ``--out``;
``enhance v.mp4 v.mp4``. Warts: no stale lock files, files honour the umask, a finished ``--out`` is
not silently replaced, ``cache ls`` on a missing directory, the hostile-pickle message, Ctrl-C,
``predict`` on several videos, ``--window-stride -5``, duplicate class names, relative config paths,
and the student using the views its store holds.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import threading
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="module")
def work(module_dir) -> Path:
    return module_dir


@pytest.fixture(scope="module")
def tiny(work) -> Path:
    return faults.make_tiny_set(work / "tiny", classes=2, clips_per_class=3)


@pytest.fixture(scope="module")
def cfg(tiny) -> Path:
    return tiny / "config.yaml"


@pytest.fixture(scope="module")
def ckpt(work, cfg) -> Path:
    return faults.make_checkpoint(work / "student.pt", cfg)


@pytest.fixture(scope="module")
def clip(tiny) -> Path:
    return next((tiny / "clips" / "Jump").glob("*.mp4"))


@pytest.fixture(scope="module")
def run(work, cfg) -> Path:
    """A finished 1-epoch tiny teacher run."""
    out = work / "run"
    r = _invoke(["teacher", "--config", cfg, *sets(extra=ONE_EPOCH), "--out", out, "--no-progress"])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def store(work, cfg) -> Path:
    """A complete tiny Zarr logit store (2 views) of an untrained teacher."""
    teacher = faults.make_checkpoint(work / "teacher.pt", cfg, kind="teacher")
    out = work / "t.zarr"
    r = _invoke(["cache-logits", "--config", cfg, *sets(), "--teacher", teacher, "--out", out, "--no-progress"])
    assert r.exit_code == 0, r.output
    return out


# ------------------------------------------------------------------ 1. empty list / class without clips
def test_1_empty_training_list_stops_before_work(work, cfg, tiny):
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


def test_1_class_missing_from_test_list_warns(tiny, caplog):
    from dlkdd.data.manifest import read_arid
    from dlkdd.data.prepare import check_class_coverage

    train = read_arid(tiny / "train.txt", tiny / "mapping_table.txt", tiny / "clips")
    test = read_arid(tiny / "test.txt", tiny / "mapping_table.txt", tiny / "clips")
    test_jump = test.subset([i for i in range(len(test)) if test[i].label == 0])
    count("bad input")
    with caplog.at_level("WARNING"):
        check_class_coverage(train, test_jump, "train.txt", "test.txt")
    assert "no clip in the test list" in caplog.text and test.classes[1] in caplog.text


def test_1_zero_clip_store_fails_verify(tmp_path):
    from dlkdd.cache.inspect import verify_store
    from dlkdd.cache.store import LogitStore

    count("bad store")
    with LogitStore.create(tmp_path / "e.zarr", [], 2, 2, {"classes": ["a", "b"]}) as s:
        s.mark_complete()
    assert any("holds no clips" in p for p in verify_store(tmp_path / "e.zarr"))


# ------------------------------------------------------------------ 2. unwritable outputs
def test_2_unwritable_probe_is_a_one_line_error(tmp_path, monkeypatch):
    """Root-independent: the probe write itself fails (as it would for a normal user on a 0555 dir)."""
    import tempfile

    from dlkdd.errors import OutputError
    from dlkdd.outputs import check_writable_dir, check_writable_file

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    count("unwritable output", 2)
    with pytest.raises(OutputError, match="--out .*cannot write there \\(permission denied\\)"):
        check_writable_dir(tmp_path / "o", "--out")
    with pytest.raises(OutputError, match="--path-file"):
        check_writable_file(tmp_path / "p.txt", "--path-file")


def test_2_unwritable_outputs_refused_before_any_work(work, cfg, clip, store):
    faults.skip_unless_permissions_enforced()
    ro = work / "ro"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o555)
    try:
        teacher = work / "teacher.pt"
        cases = [
            (["teacher", "--config", cfg, *sets(), "--out", ro / "run", "--no-progress"], "--out"),
            (["enhance", clip, ro / "e.mp4", "--kind", "gamma"], "OUT"),
            (["data", "check", "--config", cfg, "--write-stats", ro / "stats.yaml"], "--write-stats"),
            (["cache-logits", "--config", cfg, *sets(), "--teacher", teacher, "--out", ro / "x.zarr",
              "--no-progress"], "--out"),
            (["cache-logits", "--config", cfg, *sets(), "--teacher", teacher, "--out", work / "t.zarr",
              "--path-file", ro / "p.txt", "--no-progress"], "--path-file"),
        ]
        for args, what in cases:
            count("unwritable output")
            r = cli(args, unprivileged=True)
            assert_clean_error(r, what, str(ro), "cannot")
            assert "training clips" not in r.stderr and "teacher logits" not in r.stderr  # no work done first
        assert not any(ro.iterdir())
    finally:
        ro.chmod(0o755)


# ------------------------------------------------------------------ 3. long videos
def test_3_window_starts_cover_the_whole_video():
    from dlkdd.pipeline.evaluate import window_starts

    s = window_starts(1800, 31, 15, max_windows=64)
    assert len(s) <= 64 and s[0] == 0 and s[-1] == 1800 - 31
    s = window_starts(100, 31, 15)
    assert s[-1] == 100 - 31 and all(b - a <= 15 for a, b in zip(s, s[1:]))


def test_3_predict_scores_a_long_video_to_its_end(work, ckpt):
    from dlkdd.data.writer import write_video

    rng = np.random.default_rng(0)
    frames = (rng.random((400, 32, 48, 3)) * 60).astype(np.uint8)  # 400 frames at 30 fps: 13.3 s
    long = write_video(work / "long.mp4", frames, fps=30)
    count("bad input")
    r = _invoke(["predict", ckpt, long, "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)[0]
    assert res["windows"][-1]["end_s"] == pytest.approx(400 / 30, abs=0.05)
    assert res["scored"]["windows"] == len(res["windows"]) <= 64
    assert res["scored"]["end_s"] == pytest.approx(res["scored"]["duration_s"], abs=0.05)
    r = _invoke(["predict", ckpt, long])
    assert "scored" in r.output and "spread over" in r.output


# ------------------------------------------------------------------ 4. damaged stores
def _damaged_copy(store: Path, work: Path, name: str) -> Path:
    d = work / name
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(store, d)
    return d


def test_4_deleted_and_truncated_chunks_are_named_as_store_damage(work, store, cfg):
    from dlkdd.cache.inspect import verify_store
    from dlkdd.cache.store import LogitStore
    from dlkdd.errors import CacheError

    # a deleted chunk: it used to read as NaN and stop training on "non-finite kd_loss ... lower train.lr"
    gone = _damaged_copy(store, work, "gone.zarr")
    (gone / "logits" / "c" / "1" / "0" / "0").unlink()
    count("damaged store", 4)
    with LogitStore.open(gone) as s, pytest.raises(CacheError, match="damaged: missing or unreadable logits chunk"):
        s.read(1)
    probs = verify_store(gone)
    assert any("missing/unreadable logits chunk" in p for p in probs) and not any("non-finite" in p for p in probs)
    err = assert_clean_error(_invoke(["cache", "stats", gone, "--config", cfg]), str(gone), "damaged")
    assert "--overwrite" in err and "cache-logits" in err
    err = assert_clean_error(_invoke(["student", "--config", cfg, *sets(extra=ONE_EPOCH), "--cache", gone,
                                      "--out", work / "s_gone", "--no-progress"]), str(gone), "damaged")
    assert "kd_loss" not in err
    # a truncated chunk: it used to give a Zstd traceback
    cut = _damaged_copy(store, work, "cut.zarr")
    chunk = cut / "logits" / "c" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:5])
    count("damaged store", 3)
    with LogitStore.open(cut) as s, pytest.raises(CacheError, match="damaged: unreadable logits chunk"):
        s.read(0)
    assert any("missing/unreadable logits chunk" in p for p in verify_store(cut))
    assert_clean_error(_invoke(["cache", "stats", cut, "--config", cfg]), str(cut), "damaged")
    # cache ls says what it checked; --verify reads every chunk
    r = _invoke(["cache", "ls", work])
    assert r.exit_code == 0 and "not verified" in r.output
    r = _invoke(["cache", "ls", work, "--verify"])
    line = next(ln for ln in r.output.splitlines() if ln.startswith("cut.zarr"))
    assert "damaged" in line and "yes" not in line
    assert next(ln for ln in r.output.splitlines() if ln.startswith("t.zarr")).rstrip().endswith("yes")


def test_4_bit_flipped_hdf5_is_store_damage(tmp_path):
    """Flip every 64-byte block of a small HDF5 store in turn: opening and reading it either works
    (the flip hit unused bytes or plain data) or is a CacheError naming the store - never an h5py
    traceback."""
    from dlkdd.cache.store import LogitStore
    from dlkdd.errors import CacheError

    p = tmp_path / "s.h5"
    with LogitStore.create(p, [f"k{i}" for i in range(8)], 2, 3, {"classes": ["a", "b", "c"]}, fmt="hdf5") as s:
        s.write_many(range(8), np.ones((8, 2, 3)), np.zeros((8, 2, 8)))
        s.mark_complete()
    raw = p.read_bytes()
    q = tmp_path / "q.h5"
    named = 0
    for off in range(0, len(raw), 64):
        b = bytearray(raw)
        b[off:off + 64] = bytes(x ^ 0xFF for x in b[off:off + 64])
        q.write_bytes(bytes(b))
        try:
            with LogitStore.open(q) as s:
                s.read_many(range(8))
        except CacheError as e:
            assert str(q) in str(e)
            named += "damaged" in str(e)
    assert named >= 5
    count("damaged store")


# ------------------------------------------------------------------ 5. devices
def test_5_unavailable_device_is_one_line(ckpt, clip):
    count("bad input", 2)
    assert_clean_error(_invoke(["--device", "tpu", "predict", ckpt, clip]), "--device tpu", "available here: cpu")
    bad = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    assert_clean_error(_invoke(["--device", bad, "predict", ckpt, clip]), f"--device {bad}", "not available")


# ------------------------------------------------------------------ 6. non-finite weights
def test_6_nan_weights_refused_on_load(work, ckpt, cfg, clip):
    ck = torch.load(ckpt, weights_only=True)
    name = next(k for k, v in ck["model"].items() if v.is_floating_point() and v.ndim > 1)
    ck["model"][name] = torch.full_like(ck["model"][name], float("nan"))
    nan = work / "nan.pt"
    torch.save(ck, nan)
    count("bad checkpoint", 3)
    assert_clean_error(_invoke(["predict", nan, clip]), str(nan), "non-finite weights", name)
    r = _invoke(["predict", nan, clip, "--json"])
    assert "NaN" not in r.output.replace("NaN/inf", "")
    assert_clean_error(_invoke(["evaluate", nan, "--config", cfg, "--workers", "0", "--no-progress"]), str(nan),
                       "non-finite weights")


def test_6_non_finite_outputs_refused():
    from dlkdd.errors import DataError
    from dlkdd.pipeline.evaluate import check_finite_outputs

    count("bad checkpoint")
    check_finite_outputs(torch.zeros(2, 3), "m.pt", ["a", "b"])
    with pytest.raises(DataError, match="m.pt: the model output NaN/inf for 1 input"):
        check_finite_outputs(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), "m.pt", ["a", "b"])


# ------------------------------------------------------------------ 7. two runs on one --out
def test_7_second_run_on_a_held_out_is_refused(work, cfg):
    from dlkdd.cache.lock import WriterLock

    out = work / "held"
    out.mkdir()
    count("concurrent run")
    with WriterLock(out / "run", what=f"run directory {out}"):
        err = assert_clean_error(_invoke(["teacher", "--config", cfg, *sets(), "--out", out, "--no-progress"]),
                                 f"run directory {out}", "being written by another process", f"pid {os.getpid()}")
    assert "teacher.pt" not in err and not (out / "teacher.pt").exists()


def test_7_concurrent_runs_in_subprocesses(work, cfg):
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


# ------------------------------------------------------------------ 8. clips too big for memory
def test_8_huge_clip_refused_before_training(work, cfg):
    count("bad config")
    err = assert_clean_error(_invoke(["teacher", "--config", cfg, *sets(), "--set", "clip.frames=100000000",
                                      "--out", work / "huge", "--no-progress"]), "clip.frames=100000000",
                             "train.batch_size")
    assert "GiB" in err and not (work / "huge" / "last.pt").exists()


def test_8_estimate_scales_with_the_keys():
    from dlkdd.config import load_config
    from dlkdd.errors import ResourceError
    from dlkdd.train.rundir import check_batch_memory, estimate_batch_bytes

    c = load_config(None, ["clip.frames=16", "clip.size=112", "train.batch_size=8", "train.workers=0"])
    assert estimate_batch_bytes(c, "cpu") > estimate_batch_bytes(c, "cuda") >= 8 * 3 * 16 * 112 * 112 * 4
    check_batch_memory(c, "cpu", available=64 * 2**30)
    with pytest.raises(ResourceError, match="clip.size=112"):
        check_batch_memory(c, "cpu", available=2**20)


# ------------------------------------------------------------------ 9. resume with changed settings
def test_9_resume_refuses_changed_settings(run, cfg):
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


def test_9_more_epochs_only_with_a_schedule_that_allows_them(work, cfg):
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


def test_9_resume_refuses_another_cached_teacher():
    from dlkdd.errors import CheckpointError
    from dlkdd.train.rundir import check_resume_extra

    ck = {"extra": {"teacher_sha256": "a" * 64, "cache": "cache/a.zarr"}}
    check_resume_extra(ck, {"teacher_sha256": "a" * 64, "cache": "moved/a.zarr"}, "r/last.pt")
    count("bad resume")
    with pytest.raises(CheckpointError, match="teacher_sha256: aaaaaaaaaaaa in the checkpoint, bbbbbbbbbbbb now"):
        check_resume_extra(ck, {"teacher_sha256": "b" * 64}, "r/last.pt")


# ------------------------------------------------------------------ 10. finished run resumed elsewhere
def test_10_finished_run_resumed_into_another_out(run, cfg, work):
    new = work / "snew"
    count("bad resume")
    r = _invoke(["teacher", "--config", cfg, *sets(extra=ONE_EPOCH), "--out", new, "--resume", run,
                 "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (new / "teacher.pt").is_file() and (new / "last.pt").is_file() and (new / "metrics.json").is_file()
    a, b = torch.load(run / "teacher.pt", weights_only=True), torch.load(new / "teacher.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# ------------------------------------------------------------------ 11. enhance onto its input
def test_11_enhance_refuses_to_overwrite_its_input(work, clip):
    v = work / "v.mp4"
    shutil.copy(clip, v)
    before = _sha(v)
    count("bad input", 2)
    assert_clean_error(_invoke(["enhance", v, v, "--kind", "gamma"]), "is also an input")
    os.link(v, work / "v_alias.mp4")
    assert_clean_error(_invoke(["enhance", v, work / "v_alias.mp4", "--kind", "gamma"]), "is also an input")
    assert _sha(v) == before


# ------------------------------------------------------------------ warts
def test_wart_no_stale_lock_files(run, store):
    assert not (run / "run.lock").exists()
    assert not store.with_name(store.name + ".lock").exists()


def test_wart_lock_waiter_follows_a_deleted_lock_file(tmp_path):
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


def test_wart_written_files_respect_the_umask(tmp_path, run):
    from dlkdd.utils import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    mask = old
    for name in ("teacher.pt", "last.pt", "metrics.json"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~mask, name


def test_wart_rerun_into_a_finished_out_is_refused(run, cfg):
    before = _sha(run / "teacher.pt")
    count("bad input")
    assert_clean_error(_invoke(["teacher", "--config", cfg, *sets(extra=ONE_EPOCH), "--out", run, "--no-progress"]),
                       "already holds a run", f"--resume {run}", "another --out")
    assert _sha(run / "teacher.pt") == before


def test_wart_cache_ls_on_a_missing_directory(work):
    count("bad input")
    assert_clean_error(_invoke(["cache", "ls", work / "nowhere"]), "no such directory")


def test_wart_hostile_pickle_message_gives_no_unsafe_advice(work, clip):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    evil = work / "evil.pt"
    torch.save({"schema_version": 1, "dlkdd_version": "0", "x": Evil()}, evil)
    count("hostile checkpoint")
    err = assert_clean_error(_invoke(["predict", evil, clip]), str(evil), "cannot be loaded safely")
    assert "weights_only" not in err and "False" not in err and "system" in err


def test_wart_ctrl_c_says_how_to_resume(tmp_path):
    import click

    from dlkdd.commands.common import friendly_errors

    @friendly_errors
    def train(out, resume):
        raise KeyboardInterrupt

    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(click.ClickException, match=f"--resume {tmp_path}"):
        train(out=str(tmp_path), resume=None)


def test_wart_predict_scores_the_good_videos_and_fails(work, ckpt, clip):
    missing = work / "missing.mp4"
    count("bad input")
    r = _invoke(["predict", ckpt, clip, missing, clip])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert r.output.count(str(clip)) == 2 and str(missing) in r.output and "1 of 3 videos" in r.output


def test_wart_negative_window_stride_refused(ckpt, clip):
    count("bad input")
    r = _invoke(["predict", ckpt, clip, "--window-stride", "-5"])
    assert r.exit_code == 2 and "--window-stride" in r.output


def test_wart_duplicate_class_names_refused(tmp_path):
    from dlkdd.data.manifest import read_class_table
    from dlkdd.errors import DataError

    m = tmp_path / "mapping_table.txt"
    m.write_text("0\tJump\n1\tRun\n2\tJump\n")
    count("bad input")
    with pytest.raises(DataError, match="'Jump' listed twice"):
        read_class_table(m)


def test_wart_relative_config_paths(tmp_path, monkeypatch):
    from dlkdd.config import load_config

    d = tmp_path / "proj"
    d.mkdir()
    (d / "train.txt").write_text("")
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "only_here.txt").write_text("")
    (d / "c.yaml").write_text("data:\n  train_list: train.txt\n  test_list: only_here.txt\n  mapping: nowhere.txt\n")
    monkeypatch.chdir(tmp_path / "cwd")
    c = load_config(d / "c.yaml", ["data.root=clips"])
    assert c.data.train_list == str(d / "train.txt")  # beside the config file
    assert c.data.test_list == str(tmp_path / "cwd" / "only_here.txt")  # only under the working directory
    assert c.data.mapping == str(d / "nowhere.txt")  # neither: the config-relative path, shown in errors
    assert c.data.root == str(tmp_path / "cwd" / "clips")  # --set: the working directory
    assert Path(c.enhancer.weights).is_absolute()


def test_wart_presets_still_resolve_from_the_repo_root(monkeypatch):
    from conftest import shared_path

    from dlkdd.config import load_config

    shared_path("arid6")
    monkeypatch.chdir(faults.REPO)
    c = load_config("configs/arid6-mini.yaml")
    assert Path(c.data.train_list).is_file() and Path(c.enhancer.weights).is_file()


def test_wart_student_uses_the_views_the_store_holds(work, store, cfg):
    count("bad config")
    r = _invoke(["student", "--config", cfg, *sets(extra=[*ONE_EPOCH, "cache.views=5"]), "--cache", store,
                 "--out", work / "s_views", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (work / "s_views" / "student.pt").is_file()


def test_wart_synth_needs_two_clips_per_class_and_replaces_its_own_set(tmp_path):
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
    (other / "clips").mkdir(parents=True)
    r = _invoke(["synth", other, "--clips-per-class", "2"])
    assert r.exit_code == 2 and "did not write" in r.output and (other / "clips").is_dir()


def test_wart_degenerate_normalisation_named(tmp_path):
    from dlkdd.config import ConfigError, load_config
    from dlkdd.train.engine import _nan_hint

    count("bad config")
    with pytest.raises(ConfigError, match="model.std.*overflow"):
        load_config(None, ["model.std=[1e-40,0.1,0.1]"])
    assert "not the cause" in _nan_hint(0, 0) and "model.std" in _nan_hint(0, 0)
    assert "Lower train.lr" in _nan_hint(2, 5)


def test_wart_evaluate_csv_without_mapping_and_clip_overrides(work, tiny, ckpt, cfg):
    from dlkdd.data.manifest import read_arid

    test = read_arid(tiny / "test.txt", tiny / "mapping_table.txt", tiny / "clips")
    csv = work / "test.csv"
    csv.write_text("path,label\n" + "".join(f"{e.path},{test.classes[e.label]}\n" for e in test.entries))
    count("bad input", 2)
    r = _invoke(["evaluate", ckpt, "--list", csv, "--format", "csv", "--workers", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert f"(n={len(test)}" in r.output
    r = _invoke(["evaluate", ckpt, "--config", cfg, "--set", "clip.frames=2", "--workers", "0", "--no-progress"])
    assert r.exit_code == 0 and "clip settings changed by --set clip.frames=2" in r.output


def test_wart_cache_logits_compares_the_teachers_clip_spec(caplog, cfg):
    from dlkdd.config import load_config
    from dlkdd.pipeline.cache_logits import _warn_clip_mismatch

    c = load_config(cfg, [*faults.TINY])
    with caplog.at_level("WARNING"):
        _warn_clip_mismatch({"config": {"clip": {"frames": 4, "stride": 2, "size": 32, "resize": 40}}}, c, Path("t.pt"))
        assert not caplog.text
        _warn_clip_mismatch({"config": {"clip": {"frames": 8, "stride": 2, "size": 32, "resize": 40}}}, c, Path("t.pt"))
    assert "clip.frames=4 (teacher: 8)" in caplog.text and "--set clip.frames=8" in caplog.text


def test_wart_default_enhancer_weights_found_outside_the_project(tmp_path, clip):
    from conftest import shared_path

    shared_path("zerodce", "Epoch99.pth")
    count("bad input")
    r = cli(["enhance", clip, "out.mp4", "--max-frames", "2"], cwd=tmp_path)  # default --kind zerodce
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "out.mp4").is_file()


def test_1_empty_list_refused_by_cache_logits_too(work, cfg):
    empty = work / "empty2.txt"
    empty.write_text("")
    teacher = faults.make_checkpoint(work / "teacher_e.pt", cfg, kind="teacher")
    count("bad input")
    assert_clean_error(_invoke(["cache-logits", "--config", cfg, *sets(), "--set", f"data.train_list={empty}",
                                "--teacher", teacher, "--out", work / "e0.zarr", "--no-progress"]), "no usable clip")
    assert not (work / "e0.zarr").exists()
