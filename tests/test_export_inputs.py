"""``dlkdd export`` and the exported files: options refused before the export (``--tol nan``, an opset torch's
exporter does not write), files that are not checkpoints named as what they are (a metrics JSON, an exported
model), a TorchScript file named ``.onnx`` loaded as TorchScript, and a ``FILE.json`` that disagrees with the
spec embedded in the model warned about."""
from __future__ import annotations

import json
import logging
import pickle

import pytest
import torch
from click.testing import CliRunner

import faults
from dlkdd.cli import main
from faults import assert_clean_error, count

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)


def _invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def ts(work, ckpt):
    """The tiny student exported to TorchScript, under a misleading .onnx name."""
    out = work / "student.onnx"
    r = _invoke(["export", ckpt, "--format", "torchscript", "--out", out, "--no-check"])
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("opts,needle", [(["--tol", "nan"], "--tol"), (["--opset", "5"], "--opset"),
                                         (["--opset", "99"], "--opset")])
def test_bad_export_options_refused(work, ckpt, opts, needle):
    count("bad option")
    r = _invoke(["export", ckpt, "--format", "onnx", "--out", work / "x.onnx", *opts])
    assert r.exit_code == 2 and needle in r.output and ".tmp" not in r.output, r.output


def test_files_that_are_not_checkpoints_are_named(work, ts):
    metrics = work / "metrics.json"
    metrics.write_text(json.dumps({"top1": 50.0}))
    count("bad checkpoint", 2)
    assert_clean_error(_invoke(["export", metrics, "--format", "torchscript", "--out", work / "y.ts"]), "JSON file")
    assert_clean_error(_invoke(["export", ts, "--format", "torchscript", "--out", work / "y.ts"]),
                       "exported to torchscript")


class _no_warnings:
    """Fail if a UserWarning is issued inside the block."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings(record=True)
        self.got = self._w.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._w.__exit__(*exc)
        assert not [w for w in self.got if issubclass(w.category, UserWarning)], [str(w.message) for w in self.got]


def test_raw_pickle_gives_no_torch_warning(work):
    raw = work / "raw.pt"
    raw.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    count("bad checkpoint")
    with _no_warnings():
        r = _invoke(["export", raw, "--format", "torchscript", "--out", work / "z.ts"])
    assert r.exit_code == 1 and "UserWarning" not in r.output


def test_torchscript_named_onnx_is_loaded_as_torchscript(ts, clip):
    r = _invoke(["predict", ts, clip])
    assert r.exit_code == 0, r.output


def test_a_sidecar_that_disagrees_is_warned_about(work, ts, caplog):
    from dlkdd.deploy.runtime import load_exported
    from dlkdd.deploy.spec import sidecar_path

    side = sidecar_path(ts)
    spec = json.loads(side.read_text())
    side.write_text(json.dumps(dict(spec, classes=spec["classes"][::-1])))
    with caplog.at_level(logging.WARNING, logger="dlkdd.deploy.runtime"):
        model = load_exported(ts)
    assert model.classes == spec["classes"]  # the embedded spec wins
    assert any("differs from the spec embedded" in r.getMessage() and "classes" in r.getMessage()
               for r in caplog.records)
    assert torch.is_tensor(model(torch.rand(1, 3, 4, 32, 32)))
