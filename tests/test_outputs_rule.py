"""The output rule of every writing command: no output may be an input or another output (hard links,
symbolic links and ``..`` resolved), and an output that cannot be written is refused before any work
(probed: permissions, read-only file systems); written files get the umask's mode.

Each case runs the real command (in-process, click's runner) with an output that names one of its
inputs, and checks that it fails with one ``Error:`` line and leaves the input byte for byte as it was.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import faults
from dlkdd.cli import main
from dlkdd.errors import OutputError
from faults import assert_clean_error, cli, count, sets

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)


def _invoke(args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _refused_and_kept(args, victim: Path, *needles: str) -> None:
    """``dlkdd ARGS`` fails with one clean error line holding ``needles``, and ``victim`` is unchanged."""
    before = _sha(victim)
    count("output is an input")
    assert_clean_error(_invoke(args), *needles)
    assert _sha(victim) == before, f"{victim} was changed"


@pytest.fixture(scope="module")
def preds(work, tiny) -> tuple[Path, Path]:
    """Two prediction files of the tiny set's test clips."""
    from dlkdd.predictions import from_logits, write_predictions

    keys, rng = ["Jump/Jump_2_3", "Walk/Walk_2_3"], np.random.default_rng(0)
    views = {"clips": 1, "crops": 1, "frames": 4, "stride": 2, "size": 32, "resize": 40}
    out = []
    for name in ("a.jsonl", "b.jsonl"):
        p = from_logits(keys, [0, 1], rng.normal(size=(2, 2)), ["Jump", "Walk"], {"views": views})
        out.append(write_predictions(work / name, p))
    return out[0], out[1]


def test_same_file_sees_hard_links_symlinks_and_dotdot(tmp_path):
    from dlkdd.outputs import same_file

    f = tmp_path / "a.txt"
    f.write_text("x")
    os.link(f, tmp_path / "hard.txt")
    (tmp_path / "soft.txt").symlink_to(f)
    (tmp_path / "d").mkdir()
    assert same_file(tmp_path / "hard.txt", f)
    assert same_file(tmp_path / "soft.txt", f)
    assert same_file(tmp_path / "d" / ".." / "a.txt", f)
    assert same_file(tmp_path / "new.txt", tmp_path / "d" / ".." / "new.txt")  # neither exists yet
    assert not same_file(tmp_path / "new.txt", f)


def test_check_outputs_refuses_an_input_and_a_repeated_output(tmp_path):
    from dlkdd.outputs import check_outputs

    f = tmp_path / "in.txt"
    f.write_text("x")
    with pytest.raises(OutputError, match="--json .* is also an input"):
        check_outputs({"--json": tmp_path / "." / "in.txt"}, [f])
    with pytest.raises(OutputError, match="--out-test .* is also the output of --out-train"):
        check_outputs({"--out-train": tmp_path / "x.txt", "--out-test": tmp_path / "x.txt"}, [f])
    check_outputs({"--json": tmp_path / "out.json", "--plot": None}, [f, None])  # fine


def test_run_directory_files_are_outputs(tmp_path):
    from dlkdd.commands.common import check_run_outputs

    run = tmp_path / "run"
    run.mkdir()
    (run / "log.json").write_text("[]")
    with pytest.raises(OutputError, match="--out log.json"):  # e.g. --set data.train_list=OUT/log.json
        check_run_outputs(str(run), "teacher.pt", [run / "log.json"])
    with pytest.raises(OutputError, match="--out .* is also an input"):  # --out = the cache store
        check_run_outputs(str(run), "student.pt", [run])


def test_export_out_equal_to_the_checkpoint_or_a_hard_link_of_it(work, ckpt):
    _refused_and_kept(["export", ckpt, "--format", "torchscript", "--out", ckpt], ckpt, "is also an input")
    link = work / "student-link.pt"
    os.link(ckpt, link)
    _refused_and_kept(["export", ckpt, "--format", "torchscript", "--out", link], ckpt, "is also an input")


def test_evaluate_predictions_or_json_equal_to_the_checkpoint(work, ckpt, cfg):
    for opt in ("--predictions", "--json"):
        _refused_and_kept(["evaluate", ckpt, "--config", cfg, *sets(), opt, ckpt, "--no-progress"], ckpt,
                          opt, "is also an input")
    soft = work / "soft.json"
    soft.symlink_to(ckpt)
    _refused_and_kept(["evaluate", ckpt, "--config", cfg, "--json", soft, "--no-progress"], ckpt, "is also an input")


def test_evaluate_predictions_and_json_on_one_path(work, ckpt, cfg):
    count("output is an input")
    assert_clean_error(_invoke(["evaluate", ckpt, "--config", cfg, "--predictions", work / "x.jsonl", "--json",
                                work / "x.jsonl", "--no-progress"]), "also the output of")
    assert not (work / "x.jsonl").exists()


def test_cache_logits_path_file_equal_to_the_teacher(work, cfg):
    teacher = faults.make_checkpoint(work / "teacher-pf.pt", cfg, kind="teacher")
    _refused_and_kept(["cache-logits", "--config", cfg, *sets(), "--teacher", teacher, "--path-file", teacher,
                       "--out", work / "t.zarr", "--no-progress"], teacher, "--path-file", "is also an input")
    assert not (work / "t.zarr").exists()


def test_data_check_write_stats_equal_to_the_config(cfg, tiny):
    _refused_and_kept(["data", "check", "--config", cfg, "--write-stats", cfg], cfg, "--write-stats")
    _refused_and_kept(["data", "check", "--config", cfg, "--write-stats", tiny / "clips" / ".." / "config.yaml"], cfg,
                      "is also an input")


def test_compare_json_or_plot_equal_to_an_input(preds):
    a, b = preds
    _refused_and_kept(["compare", f"a={a}", f"b={b}", "--json", a, "--bootstrap", "100"], a, "--json")
    _refused_and_kept(["compare", f"a={a}", f"b={b}", "--plot", b, "--bootstrap", "100"], b, "--plot")


def test_data_split_outputs_equal_to_the_list_or_to_each_other(work, tiny):
    lst = work / "all.txt"
    lst.write_text((tiny / "train.txt").read_text() + (tiny / "test.txt").read_text())
    common = ["data", "split", lst, "--by-group", "--test-fraction", "0.5"]
    _refused_and_kept([*common, "--out-train", lst, "--out-test", work / "te.txt"], lst, "--out-train")
    count("output is an output")
    assert_clean_error(_invoke([*common, "--out-train", work / "x.txt", "--out-test", work / "x.txt"]),
                       "also the output of --out-train")
    assert not (work / "x.txt").exists()


def test_export_unwritable_out_refused_before_the_export(work, ckpt, monkeypatch):
    import dlkdd.deploy.export as export

    monkeypatch.setattr(export, "export_checkpoint", lambda *a, **k: pytest.fail("exported before the probe"))
    (work / "a-file").write_text("")
    count("unwritable output")
    assert_clean_error(_invoke(["export", ckpt, "--format", "torchscript", "--out", work / "a-file" / "m.ts"]),
                       "--out", "cannot")


def test_compare_unwritable_json_or_plot_refused_before_reading(work, preds, monkeypatch):
    import dlkdd.predictions as predictions

    monkeypatch.setattr(predictions, "load_predictions", lambda *a, **k: pytest.fail("read before the probe"))
    (work / "b-file").write_text("")
    a, b = preds
    for opt in ("--json", "--plot"):
        count("unwritable output")
        assert_clean_error(_invoke(["compare", f"a={a}", f"b={b}", opt, work / "b-file" / "r.out"]), opt, "cannot")


# ----------------------------------------------------------------------------------------------------

def test_unwritable_probe_is_a_one_line_error(tmp_path, monkeypatch):
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


def test_unwritable_outputs_refused_before_any_work(work, cfg, clip, store):
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


def test_a_complete_store_in_a_read_only_cache_dir_is_reused(work, cfg, store):
    """A shared read-only ``cache.dir`` holding the complete store is reused (no lock, no write); a store
    missing from it (other views) is refused before any work, naming the folder (issue 25 wart)."""
    faults.skip_unless_permissions_enforced()
    teacher, ro = work / "teacher.pt", work / "ro-cache"
    base = ["cache-logits", "--config", cfg, *sets(extra=[f"cache.dir={ro}"]), "--teacher", teacher,
            "--no-progress"]
    r = cli(base)  # builds the store under cache.dir (writable)
    assert r.returncode == 0, r.stderr
    built = Path(r.stdout.strip().splitlines()[-1])
    assert built.parent == ro and built.exists()
    ro.chmod(0o555)
    try:
        count("read-only cache reused")
        r = cli(base, unprivileged=True)
        assert r.returncode == 0, r.stderr
        assert Path(r.stdout.strip().splitlines()[-1]) == built
        r = cli([*base, "--out", built], unprivileged=True)  # the same store named by --out
        assert r.returncode == 0, r.stderr
        count("unwritable output")
        r = cli([*base, "--views", "3"], unprivileged=True)
        assert_clean_error(r, "cache.dir", str(ro), "cannot")
        assert "teacher logits" not in r.stderr
        assert sorted(p.name for p in ro.iterdir()) == [built.name]
    finally:
        ro.chmod(0o755)


def test_enhance_refuses_to_overwrite_its_input(work, clip):
    v = work / "v.mp4"
    shutil.copy(clip, v)
    before = _sha(v)
    count("bad input", 2)
    assert_clean_error(_invoke(["enhance", v, v, "--kind", "gamma"]), "is also an input")
    os.link(v, work / "v_alias.mp4")
    assert_clean_error(_invoke(["enhance", v, work / "v_alias.mp4", "--kind", "gamma"]), "is also an input")
    assert _sha(v) == before


def test_written_files_respect_the_umask(tmp_path, run):
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
