"""Artifacts written by dlkdd before the issue-13 layout change still load and compute the same.

``tests/fixtures/legacy/`` was written by ``tests/fixtures/legacy/make_legacy.py`` with commit
7b93286 (the last main of the old layout): a teacher (ZeroDCE + R(2+1)D-18-BERT), a student and an
average-head baseline checkpoint (tiny strided weights), a Zarr and an HDF5 logit store, and
``golden.npz``: what that dlkdd computed from them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dlkdd.cache.store import LogitStore
from dlkdd.cli import main
from dlkdd.pipeline.evaluate import load_model

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


@pytest.fixture(scope="module")
def golden():
    return np.load(LEGACY / "golden.npz")


@pytest.mark.parametrize("name", ["teacher", "student", "baseline"])
def test_legacy_checkpoint_gives_the_same_logits(name, golden):
    model, ckpt = load_model(LEGACY / f"{name}.pt", "cpu")
    assert ckpt["kind"] == ("baseline" if name == "baseline" else name)
    with torch.no_grad():
        out = model(torch.from_numpy(golden["input"])).float().numpy()
    np.testing.assert_allclose(out, golden[f"{name}_logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt,suffix", [("zarr", ".zarr"), ("h5", ".h5")])
def test_legacy_store_reads_the_same(fmt, suffix, golden, tmp_path):
    path = tmp_path / f"store{suffix}"  # a copy: opening must not need write access to the fixture
    (shutil.copytree if (LEGACY / f"store{suffix}").is_dir() else shutil.copy2)(LEGACY / f"store{suffix}", path)
    with LogitStore.open(path) as s:
        logits, views = s.read_all()
        assert s.is_complete and s.keys == [str(k) for k in golden[f"{fmt}_keys"]]
        assert s.meta == json.loads((LEGACY / f"{fmt}_meta.json").read_text())
    np.testing.assert_array_equal(logits, golden[f"{fmt}_logits"])
    np.testing.assert_array_equal(views, golden[f"{fmt}_views"])
    r = CliRunner().invoke(main, ["cache", "verify", str(path)], catch_exceptions=False)
    assert r.exit_code == 0 and r.output.startswith("OK"), r.output
