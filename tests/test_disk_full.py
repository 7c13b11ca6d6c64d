"""A full disk (here: the file-size limit, ``ulimit -f``, which fails a write with EFBIG as ENOSPC would)
gives one error line naming the file and the space it needs; nothing torn is left and the previous
file (the last good checkpoint) is kept."""
from __future__ import annotations

import errno
import resource
import signal
from pathlib import Path

import pytest
import torch

import faults
from dlkdd.errors import OutputError
from faults import assert_clean_error, count, sets

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)

LIMIT = 1_000_000  # bytes: the tiny set, configs and logs fit; a tiny model's checkpoint (3-10 MB) does not


def _torn(d: Path) -> list[Path]:
    return [p for p in d.rglob(".*.tmp")]


def test_training_with_a_full_disk_names_the_checkpoint_and_the_space(work, cfg):
    out = work / "full"
    count("full disk")
    r = faults.cli(["teacher", "--config", cfg, *sets(extra=["train.epochs=1"]), "--out", out, "--no-progress"],
                   fsize=LIMIT)
    err = assert_clean_error(r, "cannot write", ".pt", "needs about", "MB")
    assert "inline_container" not in r.stdout + r.stderr
    assert not _torn(out), _torn(out)
    assert "Nothing was replaced" in err


def test_export_with_a_full_disk_is_one_line(work, ckpt):
    out = work / "m.ts"
    count("full disk")
    r = faults.cli(["export", ckpt, "--format", "torchscript", "--out", out, "--no-check"], fsize=LIMIT)
    assert_clean_error(r, str(out), "needs about")
    assert not out.exists() and not _torn(work)


@pytest.fixture
def file_size_limit():
    """Lower this process's RLIMIT_FSIZE for the duration (SIGXFSZ ignored: a write past it fails with EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def set_limit(n: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, hard))

    yield set_limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, old)


def test_a_failed_checkpoint_save_keeps_the_last_good_one(tmp_path, file_size_limit):
    from dlkdd.train.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint(path, kind="student", epoch=1, model={"w": torch.ones(10)})
    count("full disk")
    file_size_limit(200_000)
    with pytest.raises(OutputError, match=r"last\.pt: the file-size limit .* needs about 4\.0 MB"):
        save_checkpoint(path, kind="student", epoch=2, model={"w": torch.ones(1_000_000)})
    file_size_limit(resource.RLIM_INFINITY)
    assert load_checkpoint(path)["epoch"] == 1
    assert not _torn(tmp_path)


def test_no_space_left_is_named_as_such(tmp_path, monkeypatch):
    from dlkdd.utils import atomic_write_text

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "m.json").write_text("old")
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OutputError, match=r"m\.json: no space left on the device.*needs 3 bytes"):
        atomic_write_text(tmp_path / "m.json", "new")
    monkeypatch.undo()
    assert (tmp_path / "m.json").read_text() == "old" and not _torn(tmp_path)
