"""Shared fixtures. Real data lives in ../shared/data (beside the repo); tests that need it
are skipped with a reason where it is absent (an outside user's clone)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DLKDD_SHARED_DATA", REPO.parent / "shared" / "data"))

# one torch thread per pytest-xdist worker (`make test` runs 2 on 2 cores), else up to 2
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # and in the dlkdd / torchrun subprocesses the tests start
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# train.amp=auto means fp32 in the suite on every CPU, as before bf16 detection (dlkdd.train.amp):
# its exact-equality tests (resume, DDP vs one process) were written for fp32; test_amp.py covers bf16
os.environ.setdefault("DLKDD_CPU_BF16", "0")


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with a reason if it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p


@pytest.fixture
def shared() -> Path:
    return shared_path()


def pytest_report_header(config) -> str:
    """Free disk where the tests write: training tests write checkpoints of ~140-420 MB."""
    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free / 2**30
    line = f"dlkdd: {free:.1f} GiB free in {tmp} (the suite peaks at about 4 GiB there)"
    if free < 5:
        line += ("\ndlkdd: WARNING: too little free disk; training tests will fail to write checkpoints "
                 "('No space left on device'). Free some space or point TMPDIR elsewhere")
    return line


@pytest.fixture(scope="module")
def module_dir(request, tmp_path_factory) -> Iterator[Path]:
    """A directory for one test module's shared artifacts, deleted when the module ends.

    Kept when a test of the module failed, for inspection. Module-scoped artifacts (trained
    checkpoints, caches) would otherwise pile up until the session ends: several GB.
    """
    failed_before = request.session.testsfailed
    d = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_"))
    yield d
    if request.session.testsfailed == failed_before:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------ the fault-injection tests' tiny set (one per test module)
@pytest.fixture(scope="module")
def work(module_dir) -> Path:
    """The test module's scratch directory (:func:`module_dir`)."""
    return module_dir


@pytest.fixture(scope="module")
def tiny(work) -> Path:
    """A synthetic ARID-format set of 2 classes x 3 clips (tests/faults.py, ``make_tiny_set``)."""
    import faults

    return faults.make_tiny_set(work / "tiny", classes=2, clips_per_class=3)


@pytest.fixture(scope="module")
def cfg(tiny) -> Path:
    """The tiny set's config.yaml."""
    return tiny / "config.yaml"


@pytest.fixture(scope="module")
def ckpt(work, cfg) -> Path:
    """An untrained tiny student checkpoint (faults.TINY settings)."""
    import faults

    return faults.make_checkpoint(work / "student.pt", cfg)


@pytest.fixture(scope="module")
def clip(tiny) -> Path:
    """One clip of the tiny set."""
    return next((tiny / "clips" / "Jump").glob("*.mp4"))


def _invoke_cli(args):
    from click.testing import CliRunner

    from dlkdd.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(work, cfg) -> Path:
    """A finished 1-epoch tiny teacher run."""
    import faults

    out = work / "run"
    r = _invoke_cli(["teacher", "--config", cfg, *faults.sets(extra=["train.epochs=1"]), "--out", out, "--no-progress"])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def store(work, cfg) -> Path:
    """A complete tiny Zarr logit store (2 views) of an untrained teacher."""
    import faults

    teacher = faults.make_checkpoint(work / "teacher.pt", cfg, kind="teacher")
    out = work / "t.zarr"
    r = _invoke_cli(["cache-logits", "--config", cfg, *faults.sets(), "--teacher", teacher, "--out", out,
                     "--no-progress"])
    assert r.exit_code == 0, r.output
    return out
