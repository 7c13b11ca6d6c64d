"""``dlkdd export --int8 static`` (issue 24): ONNX Runtime static int8 of the light students, calibrated on
centred training clips of the checkpoint's own list (real arid6 clips), the backbone table's fp32 modules
left unquantised, the agreement with fp32 in the sidecar, the refusals, and ``evaluate`` / ``predict`` on
the int8 file.

Checkpoints are untrained tiny students (4 frames of 32x32, 6 classes) whose config points at arid6;
8 clips calibrate, 8 others check (the default 16 is for real sizes)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import shared_path
from dlkdd.cli import main
from dlkdd.deploy.spec import sidecar_path

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'dlkdd[export]'")
pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'dlkdd[export]'")
onnx = pytest.importorskip("onnx")

CLASSES = ["Jump", "Run", "Sit", "Stand", "Turn", "Walk"]
CLIP = {"frames": 4, "stride": 2, "size": 32, "resize": 40}
CALIB = 8
# convs kept fp32 by the backbone table's recipe, counted from the architectures: the stem (1), the first
# block without expansion (depthwise + project: 2), the next two blocks (expand + depthwise + project: 3 each)
# and the 1x1 head conv (1) - of 49 (EfficientNet-Lite0: 16 blocks) and 52 (MobileNetV2: 17 blocks) convs
KEPT_CONVS = 1 + 2 + 3 + 3 + 1
ALL_CONVS = {"efficientnet_lite0": 49, "mobilenet_v2": 52}
# int8 vs fp32 of the file on real clips it was not calibrated on: what the export's own check refuses past
MAX_REL_ERR = 0.5


def _data(root: Path) -> dict:
    return {"format": "arid", "root": str(root / "clips"), "train_list": str(root / "arid6_train.txt"),
            "test_list": str(root / "arid6_test.txt"), "mapping": str(root / "mapping_table.txt")}


def _checkpoint(path: Path, backbone: str) -> Path:
    from dlkdd.config import config_from_dict
    from dlkdd.models.build import build_student, student_arch
    from dlkdd.train.checkpoint import save_checkpoint

    cfg = config_from_dict({"clip": CLIP, "data": _data(shared_path("arid6")),
                            "model": {"backbone": backbone, "head": "avg", "pretrained": "", "normalize": "dataset"}})
    torch.manual_seed(0)
    model = _with_signal(build_student(cfg, len(CLASSES)))
    return save_checkpoint(path, kind="student", arch=student_arch(cfg, len(CLASSES)), config=cfg.to_dict(),
                           classes=CLASSES, model=model.state_dict(), epoch=0, history=[], extra={})


def _with_signal(model: torch.nn.Module) -> torch.nn.Module:
    """Batch-norm statistics of 8 real arid6 test clips: at their initial statistics the untrained trunks pass
    almost nothing (pooled features ~1e-10, logits = the fc bias), which int8 would follow trivially."""
    from dlkdd.deploy.quantize import calibration_clips

    cfg = {"clip": CLIP, "data": dict(_data(shared_path("arid6")),
                                      train_list=str(shared_path("arid6", "arid6_test.txt")))}
    x, _, _ = calibration_clips(cfg, 8, held=0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # the plain average of the batches seen
    with torch.no_grad():
        model.train()(x)
    return model.eval()


@pytest.fixture(scope="module")
def int8_files(module_dir):
    """{backbone: (checkpoint, int8 file, CLI output)}, exported once per module."""
    cache: dict[str, tuple[Path, Path, str]] = {}

    def get(backbone: str):
        if backbone not in cache:
            ckpt = _checkpoint(module_dir / f"{backbone}.pt", backbone)
            out = module_dir / f"{backbone}-int8.onnx"
            r = CliRunner().invoke(main, ["export", str(ckpt), "--format", "onnx", "--int8", "static",
                                          "--calib-clips", str(CALIB), "--out", str(out)])
            assert r.exit_code == 0, r.output
            cache[backbone] = (ckpt, out, r.output)
        return cache[backbone]

    return get


def _producers(graph) -> dict[str, object]:
    return {o: n for n in graph.node for o in n.output}


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "mobilenet_v2"])
def test_static_int8_quantises_all_but_the_recipes_modules(int8_files, backbone):
    _, out, output = int8_files(backbone)
    g = onnx.load(str(out)).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    prod, inits = _producers(g), {i.name for i in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert len(convs) == ALL_CONVS[backbone]
    # a quantised conv reads its weight and its input through DequantizeLinear; a kept one reads fp32 weights
    quantised = [n for n in convs if getattr(prod.get(n.input[1]), "op_type", None) == "DequantizeLinear"]
    kept = [n for n in convs if n.input[1] in inits]
    assert len(kept) == KEPT_CONVS and len(quantised) == len(convs) - KEPT_CONVS
    # the stem (the first conv) and the head conv (the last one) stay fp32, the stem on the unquantised input
    assert convs[0] in kept and convs[-1] in kept
    assert getattr(prod.get(convs[0].input[0]), "op_type", None) != "DequantizeLinear"
    spec = json.loads(sidecar_path(out).read_text())
    assert spec["quantization"] == "int8-static" and spec["int8"]["fp32_nodes"] >= KEPT_CONVS
    assert f"int8 static: calibrated on {CALIB} centred clips" in output and "top-1 agreement" in output


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "mobilenet_v2"])
def test_static_int8_runs_and_follows_fp32_on_real_clips(int8_files, backbone, module_dir):
    """The int8 file in ONNX Runtime vs the checkpoint's model (= its fp32 export, to 1e-4) on 6 arid6 test clips."""
    from dlkdd.deploy.quantize import agreement, calibration_clips
    from dlkdd.deploy.runtime import load_exported
    from dlkdd.pipeline.evaluate import load_model

    ckpt, out, _ = int8_files(backbone)
    q = load_exported(out, threads=1)
    assert q.classes == CLASSES and q.spec["clip"]["frames"] == 4 and q.spec["input"]["size"] == 32
    cfg = {"clip": CLIP, "data": dict(_data(shared_path("arid6")),
                                      train_list=str(shared_path("arid6", "arid6_test.txt")))}
    x, none, _ = calibration_clips(cfg, 6, held=0)  # centred views of 6 test clips, never int8-calibrated on
    assert x.shape == (6, 3, 4, 32, 32) and none.shape[0] == 0
    with torch.no_grad():
        ref = load_model(ckpt, "cpu")[0](x)
    got = q(x)
    a = agreement(ref, got)
    assert got.shape == (6, len(CLASSES)) and not torch.allclose(got, ref, atol=1e-4)  # really quantised
    assert a["rel_logit_error"] < MAX_REL_ERR and a["top1_agreement"] >= 0.5, a


def test_sidecar_records_the_calibration_and_the_check(int8_files):
    ckpt, out, _ = int8_files("efficientnet_lite0")
    spec = json.loads(sidecar_path(out).read_text())
    q = spec["int8"]
    assert (q["method"], q["format"], q["calibrator"]) == ("static", "QDQ", "MinMax")
    assert q["calibration"]["clips"] == CALIB and q["calibration"]["of"] == 104
    assert q["calibration"]["list"].endswith("arid6_train.txt")
    assert q["calibration"]["clip"] == {"frames": 4, "size": 32}
    assert q["fp32_modules"][0] == "model.backbone._conv_stem" and q["check"]["n"] == 8
    assert q["check"]["rel_logit_error"] <= MAX_REL_ERR and 0.5 <= q["check"]["top1_agreement"] <= 1
    from dlkdd.deploy.runtime import load_exported

    assert load_exported(out).spec["int8"] == q  # embedded in the file too


def test_bad_calibration_lists_are_one_clear_line(int8_files, tmp_path):
    ckpt, _, _ = int8_files("efficientnet_lite0")
    out = tmp_path / "q.onnx"
    args = ["export", str(ckpt), "--format", "onnx", "--int8", "static", "--out", str(out)]
    r = CliRunner().invoke(main, [*args, "--calib-list", str(tmp_path / "missing.txt")])
    assert r.exit_code == 1 and "cannot read the training list" in r.output and "missing.txt" in r.output
    assert "--calib-list" in r.output and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    short = tmp_path / "short.txt"
    short.write_text("".join(shared_path("arid6", "arid6_train.txt").read_text().splitlines(True)[:3]))
    r = CliRunner().invoke(main, [*args, "--calib-list", str(short)])
    assert r.exit_code == 1 and "holds 3 training clip(s); 16 calibrate" in r.output
    assert not out.exists() and not sidecar_path(out).exists()
    r = CliRunner().invoke(main, ["export", str(ckpt), "--format", "onnx", "--calib-clips", "4", "--out", str(out)])
    assert r.exit_code == 2 and "--int8 static" in r.output


def test_broken_agreement_is_refused_naming_the_numbers(int8_files, tmp_path, monkeypatch):
    import dlkdd.deploy.quantize as quantize

    monkeypatch.setattr(quantize, "MAX_REL_LOGIT_ERROR", 0.0)  # any int8 error now counts as broken
    ckpt, _, _ = int8_files("efficientnet_lite0")
    out = tmp_path / "q.onnx"
    r = CliRunner().invoke(main, ["export", str(ckpt), "--format", "onnx", "--int8", "static", "--calib-clips",
                                  str(CALIB), "--out", str(out)])
    assert r.exit_code == 1 and "static int8 disagrees with fp32 on 8 held training clips" in r.output
    assert "relative logit error" in r.output and "not written" in r.output
    assert not out.exists() and not sidecar_path(out).exists() and list(tmp_path.iterdir()) == []


def test_a_trunk_without_a_recipe_is_refused(tmp_path):
    ckpt = _checkpoint(tmp_path / "r.pt", "r2plus1d_tiny")
    r = CliRunner().invoke(main, ["export", str(ckpt), "--format", "onnx", "--int8", "static",
                                  "--out", str(tmp_path / "r.onnx")])
    assert r.exit_code == 1 and "no static int8 recipe for backbone r2plus1d_tiny" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "r.onnx").exists()


def test_int8_flag_alone_is_still_dynamic(monkeypatch, tmp_path):
    """``--int8`` with no value (before another option or last) means dynamic, as before ``--int8 static``."""
    import dlkdd.deploy.export as export
    from dlkdd.deploy.export import ExportOptions

    seen = []
    monkeypatch.setattr(export, "export_checkpoint", lambda *a, **k: seen.append(k["int8"]) or 1 / 0)
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"x")
    for args in (["--int8", "--out", str(tmp_path / "a.onnx")], ["--out", str(tmp_path / "b.onnx"), "--int8"],
                 ["--int8", "static", "--out", str(tmp_path / "c.onnx")]):
        CliRunner().invoke(main, ["export", str(ckpt), "--format", "onnx", *args])
    assert seen == ["dynamic", "dynamic", "static"]
    assert [ExportOptions(int8=v).int8_method for v in (True, False, None, "static")] == ["dynamic", None, None,
                                                                                          "static"]


def test_evaluate_and_predict_take_the_int8_file(int8_files, tmp_path):
    root = shared_path("arid6")
    _, out, _ = int8_files("efficientnet_lite0")
    short = tmp_path / "short.txt"
    short.write_text("".join((root / "arid6_test.txt").read_text().splitlines(True)[::12]))
    metrics = tmp_path / "m.json"
    r = CliRunner().invoke(main, ["--device", "cpu", "evaluate", str(out), "--root", str(root / "clips"),
                                  "--list", str(short), "--mapping", str(root / "mapping_table.txt"),
                                  "--workers", "0", "--no-progress", "--json", str(metrics)])
    assert r.exit_code == 0, r.output
    m = json.loads(metrics.read_text())
    assert m["n"] == len(short.read_text().splitlines()) and 0.0 <= m["top1"] <= 100.0
    video = (root / "clips" / short.read_text().splitlines()[0].split("\t")[2]).with_suffix(".mp4")
    r = CliRunner().invoke(main, ["--device", "cpu", "predict", str(out), str(video)])
    assert r.exit_code == 0, r.output
    assert any(c in r.output for c in CLASSES)


@pytest.mark.slow
def test_bench_backbones_times_static_int8_beside_fp32(tmp_path):
    """``dlkdd bench --preset light``'s table: a static int8 column for trunks with a recipe, timed in the same
    round-robin loop as fp32; a trunk without one says so."""
    from dlkdd.bench.deploy import backbones_table, bench_backbones
    from dlkdd.config import config_from_dict

    cfg = config_from_dict({"clip": CLIP, "data": _data(shared_path("arid6")),
                            "model": {"backbone": "mobilenet_v2", "head": "avg", "pretrained": "",
                                      "normalize": "dataset"}})
    res = bench_backbones(cfg, CLASSES, tmp_path, [("M", "mobilenet_v2", "avg"), ("T", "r2plus1d_tiny", "avg")],
                          repeats=1, int8_calib_clips=CALIB)
    m, t = res["rows"]
    assert m["int8_status"] == "ok" and m["int8_ms"] > 0 and m["int8_check"]["n"] == 8
    assert t["int8_status"] == "no recipe" and t["int8_ms"] is None and t["onnx_ms"] > 0
    assert (tmp_path / "backbones" / "mobilenet_v2-int8.onnx").is_file()
    table = "\n".join(backbones_table(res))
    assert "| ORT static int8 (ms) | int8 speed-up |" in table
    assert f"| {m['onnx_ms']:,.1f} | {m['int8_ms']:,.1f} | {m['onnx_ms'] / m['int8_ms']:.2f}x |" in table
    assert "| no recipe | - |" in table and "M top-1 agreement" in table
