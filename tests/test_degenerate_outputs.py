"""A model whose outputs are NaN/inf or overflow (head weights x 1e38: finite weights, logits near float32's
maximum) is refused by ``predict`` and ``evaluate`` with one line naming the checkpoint - never "nan%", a
loss of 4e37, or a JSON file holding NaN. NaN weights are refused on load."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import faults
from dlkdd.cli import main
from faults import assert_clean_error, count, sets

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)


def _invoke(args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


@pytest.fixture(scope="module")
def huge(work, ckpt):
    """The tiny student with its head's weights scaled by 1e38 (finite: the NaN-weight check passes it)."""
    from dlkdd.train.checkpoint import load_checkpoint, save_checkpoint

    c = load_checkpoint(ckpt)
    c["model"]["head.fc.weight"] = c["model"]["head.fc.weight"] * 1e38
    assert torch.isfinite(c["model"]["head.fc.weight"]).all()
    return save_checkpoint(work / "huge.pt", **{k: v for k, v in c.items() if k not in ("schema_version",
                                                                                       "dlkdd_version")})


def test_predict_refuses_overflowing_outputs(huge, clip):
    for extra in ([], ["--json"]):
        count("degenerate model")
        r = _invoke(["predict", huge, clip, *extra])
        assert "nan" not in r.output.lower()
        assert_clean_error(r, str(huge), "overflow")


def test_evaluate_refuses_overflowing_outputs_and_writes_no_json(work, huge, cfg):
    out = work / "m.json"
    count("degenerate model")
    assert_clean_error(_invoke(["evaluate", huge, "--config", cfg, *sets(), "--json", out, "--no-progress"]),
                       str(huge), "overflow")
    assert not out.exists()


def test_the_limit_passes_a_healthy_model(ckpt, clip):
    r = _invoke(["predict", ckpt, clip, "--json"])
    assert r.exit_code == 0, r.output


def test_check_finite_outputs_bounds():
    from dlkdd.errors import DataError
    from dlkdd.pipeline.evaluate import LOGIT_LIMIT, check_finite_outputs

    check_finite_outputs(torch.tensor([[LOGIT_LIMIT, -LOGIT_LIMIT]]), "m.pt", ["a"])
    for bad in (float("nan"), float("inf"), 2 * LOGIT_LIMIT, 3e38):
        with pytest.raises(DataError, match="m.pt"):
            check_finite_outputs(torch.tensor([[0.0, 1.0], [bad, 0.0]]), "m.pt", ["a", "b"])


# ----------------------------------------------------------------------------------------------------

def test_nan_weights_refused_on_load(work, ckpt, cfg, clip):
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


def test_non_finite_outputs_refused():
    from dlkdd.errors import DataError
    from dlkdd.pipeline.evaluate import check_finite_outputs

    count("bad checkpoint")
    check_finite_outputs(torch.zeros(2, 3), "m.pt", ["a", "b"])
    with pytest.raises(DataError, match="m.pt: the model output NaN/inf for 1 input"):
        check_finite_outputs(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), "m.pt", ["a", "b"])
