"""``student`` options refused before ``--out`` is created: teacher weights that are negative, not finite
or all zero."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

import faults
from dlkdd.cli import main
from faults import assert_clean_error, count, sets

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)


@pytest.fixture(scope="module")
def stores(work, cfg):
    """Two complete tiny Zarr logit stores (one untrained teacher, the second a copy)."""
    teacher = faults.make_checkpoint(work / "teacher.pt", cfg, kind="teacher")
    a = work / "a.zarr"
    r = CliRunner().invoke(main, ["cache-logits", "--config", str(cfg), *sets(), "--teacher", str(teacher),
                                  "--out", str(a), "--no-progress"])
    assert r.exit_code == 0, r.output
    shutil.copytree(a, work / "b.zarr")
    return a, work / "b.zarr"


@pytest.mark.parametrize("weights,needle", [(("-1", "2"), "-1.0"), (("0", "0"), "all 0"), (("nan", "1"), "nan")])
def test_bad_cache_weights_refused_before_the_run(work, cfg, stores, weights, needle):
    out = work / f"s-{'_'.join(weights)}"
    args = ["student", "--config", cfg, *sets(), "--cache", stores[0], "--cache", stores[1]]
    for w in weights:
        args += ["--cache-weight", w]
    count("bad option")
    assert_clean_error(CliRunner().invoke(main, [str(a) for a in [*args, "--out", out, "--no-progress"]]),
                       "--cache-weight", needle)
    assert not out.exists()
