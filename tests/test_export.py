"""``dlkdd export`` and exported models: round trip, parity on real arid6 clips, metadata,
``predict`` on an exported file, input checks, the missing-extra error, int8 agreement.

Checkpoints are untrained tiny R(2+1)D classifiers (``r2plus1d_tiny``, the layout of R(2+1)D-18 at
one block per stage and width 16) (BERT head and average head) at 8x32x32, written
with the project's checkpoint writer; each is exported once per format for the whole module.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import SHARED, shared_path
from dlkdd.cli import main
from dlkdd.deploy.spec import ExportError, MissingExtraError, sidecar_path

onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'dlkdd[export]'")
pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'dlkdd[export]'")

ARID6 = SHARED / "arid6"
CLASSES = ["Jump", "Run", "Sit", "Stand", "Turn", "Walk"]
CLIP = {"frames": 8, "stride": 2, "size": 32, "resize": 40}
TOL = 1e-4


def _config(head: str):
    from dlkdd.config import config_from_dict

    return config_from_dict({"clip": CLIP, "model": {"head": head, "pretrained": "", "normalize": "dataset",
                                                     "backbone": "r2plus1d_tiny"}})


def _write_checkpoint(path: Path, head: str, teacher: bool = False) -> Path:
    """An untrained tiny classifier (or ZeroDCE-enhancer teacher) saved as a dlkdd checkpoint."""
    from dlkdd.models.build import build_student, student_arch, teacher_arch
    from dlkdd.models.classifier import Teacher
    from dlkdd.models.zerodce import ZeroDCEEnhancer
    from dlkdd.train.checkpoint import save_checkpoint

    cfg = _config(head)
    torch.manual_seed(1 if teacher else 0)
    model = build_student(cfg, len(CLASSES))
    arch = student_arch(cfg, len(CLASSES))
    if teacher:  # a random DCE-Net: the export must carry the enhancer's weights, whatever they are
        model = Teacher(ZeroDCEEnhancer(), model)
        arch = teacher_arch(cfg.replace(**{"enhancer.kind": "zerodce", "model.teacher_normalize": "dataset"}),
                            len(CLASSES))
    return save_checkpoint(path, kind="teacher" if teacher else "student", arch=arch, config=cfg.to_dict(),
                           classes=CLASSES, model=model.state_dict(), epoch=0, history=[], extra={})


@pytest.fixture(scope="module")
def exported(module_dir):
    """{head: {"ckpt": path, "onnx": path, "torchscript": path}}, built lazily and kept for the module."""
    from dlkdd.deploy.export import export_checkpoint

    cache: dict[str, dict[str, Path]] = {}

    def get(head: str, fmt: str) -> Path:
        d = cache.setdefault(head, {})
        if "ckpt" not in d:
            d["ckpt"] = _write_checkpoint(module_dir / f"{head}.pt", head)
        if fmt not in d:
            out = module_dir / f"{head}.{'onnx' if fmt == 'onnx' else 'ts'}"
            r = export_checkpoint(d["ckpt"], out, fmt)
            assert r["check"]["max_abs_diff"] <= TOL
            d[fmt] = out
        return d[fmt]

    return get


def _eager(ckpt_path: Path):
    from dlkdd.pipeline.evaluate import load_model

    return load_model(ckpt_path, "cpu")[0]


def _real_clips(frames: int = 8, n: int = 2) -> torch.Tensor:
    """The centred 32x32 views of the first ``n`` arid6 test videos, (n,3,frames,32,32)."""
    from dlkdd.config import ClipConfig
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.config import config_from_dict
    from dlkdd.data.video import probe
    from dlkdd.data.views import center_view, load_clips

    root = shared_path("arid6")
    data = config_from_dict({"data": {"format": "arid", "root": str(root / "clips"),
                                      "train_list": str(root / "arid6_train.txt"),
                                      "test_list": str(root / "arid6_test.txt"),
                                      "mapping": str(root / "mapping_table.txt")}}).data
    manifest = manifest_from_config(data, "test")
    cc = ClipConfig(frames=frames, stride=2, size=32, resize=40)
    clips = []
    for e in list(manifest)[:: max(1, len(manifest) // n)][:n]:
        info = probe(e.path)
        clips += load_clips(e.path, [center_view(info.num_frames, cc, info.height, info.width)], cc.size)
    x = torch.stack(clips)
    assert x.shape == (n, 3, frames, 32, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert float(x.mean()) < 0.3  # really dark clips, not a black or random tensor
    return x


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("head", ["bert", "avg"])
def test_parity_on_real_arid6_clips(exported, fmt, head):
    """Exported logits equal the checkpoint's within 1e-4 on real dark clips, at the trained
    length and at another one (frames are dynamic), one clip and a batch of two."""
    from dlkdd.deploy.runtime import load_exported

    path = exported(head, fmt)
    model = _eager(path.with_name(f"{head}.pt"))
    m = load_exported(path)
    assert m.runtime == fmt
    for frames in (8, 24):
        x = _real_clips(frames)
        with torch.inference_mode():
            ref = model(x)
            got_batch = m(x)
            got_one = m(x[:1])
        assert got_batch.shape == ref.shape == (2, len(CLASSES)) and got_batch.dtype == torch.float32
        assert float((got_batch - ref).abs().max()) <= TOL, (fmt, head, frames)
        assert float((got_one - ref[:1]).abs().max()) <= TOL
        assert float((ref[0] - ref[1]).abs().max()) > 10 * TOL  # the two clips give different logits


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_metadata_read_back(exported, fmt):
    """Class names and clip spec come back from the file itself, from the raw format's own
    metadata reader, and from the sidecar JSON, all equal to the checkpoint's."""
    from dlkdd.deploy.runtime import load_exported
    from dlkdd.train.checkpoint import load_checkpoint

    path = exported("bert", fmt)
    ckpt = load_checkpoint(path.with_name("bert.pt"))
    m = load_exported(path)
    assert m.classes == list(ckpt["classes"]) == CLASSES
    for k, v in ckpt["config"]["clip"].items():
        assert m.spec["clip"][k] == v and getattr(m.clip, k) == v
    assert m.spec["kind"] == "student" and m.spec["arch"]["head"] == "bert"
    assert m.spec["input"]["mean"] == ckpt["arch"]["mean"] and m.spec["input"]["std"] == ckpt["arch"]["std"]
    assert m.spec["dynamic"]["frames"] == {"min": 1, "max": 8 * 64}  # BERT: 64 position embeddings
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        assert json.loads(props["classes"]) == CLASSES
        assert json.loads(props["clip"])["frames"] == CLIP["frames"]
        embedded = json.loads(props["dlkdd"])
        sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        shape = sess.get_inputs()[0].shape
        assert isinstance(shape[0], str) and isinstance(shape[2], str) and shape[1] == 3 and shape[3:] == [32, 32]
    else:
        extra = {"dlkdd.json": ""}
        torch.jit.load(str(path), _extra_files=extra)
        embedded = json.loads(extra["dlkdd.json"])
    assert embedded == m.spec == json.loads(sidecar_path(path).read_text())


def test_avg_head_frames_unbounded(exported):
    from dlkdd.deploy.runtime import load_exported

    m = load_exported(exported("avg", "torchscript"))
    assert m.spec["dynamic"]["frames"] == {"min": 1, "max": None}


def test_predict_on_exported_equals_checkpoint(exported):
    """`dlkdd predict` gives the same labels, windows and probabilities (1e-5) for the checkpoint
    and both exports, on a long real video (several sliding windows) and a short one."""
    videos = [str(p) for p in sorted((shared_path("arid6") / "clips" / "Jump").glob("*.mp4"))[:2]]
    outs = {}
    for name in ("ckpt", "onnx", "torchscript"):
        path = exported("bert", "onnx").with_name("bert.pt") if name == "ckpt" else exported("bert", name)
        r = CliRunner().invoke(main, ["--device", "cpu", "predict", str(path), *videos, "--json", "--topk", "6"])
        assert r.exit_code == 0, r.output
        outs[name] = json.loads(r.stdout)
    ref = outs["ckpt"]
    assert any(len(v["windows"]) > 1 for v in ref)
    for name in ("onnx", "torchscript"):
        got = outs[name]
        assert len(got) == len(ref)
        for a, b in zip(ref, got):
            assert (a["video"], a["frames"], len(a["windows"])) == (b["video"], b["frames"], len(b["windows"]))
            for ta, tb in zip([a["top"]] + [w["top"] for w in a["windows"]], [b["top"]] + [w["top"] for w in b["windows"]]):
                assert sorted(t["label"] for t in ta) == sorted(t["label"] for t in tb)
                pa, pb = {t["label"]: t["prob"] for t in ta}, {t["label"]: t["prob"] for t in tb}
                assert max(abs(pa[k] - pb[k]) for k in pa) <= 1e-5
            assert [(w["start_s"], w["end_s"]) for w in a["windows"]] == [(w["start_s"], w["end_s"]) for w in b["windows"]]


def test_export_cli_writes_file_and_spec(exported, module_dir):
    """The command end to end (TorchScript: the quick one), and its refusals."""
    ckpt = exported("avg", "torchscript").with_name("avg.pt")
    out = module_dir / "cli" / "student.ts"
    r = CliRunner().invoke(main, ["export", str(ckpt), "--format", "torchscript", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.is_file() and sidecar_path(out).is_file() and "check: max |logit difference|" in r.output
    assert json.loads(sidecar_path(out).read_text())["classes"] == CLASSES
    r = CliRunner().invoke(main, ["export", str(ckpt), "--format", "torchscript", "--int8", "--out", str(out)])
    assert r.exit_code == 2 and "--format onnx" in r.output
    r = CliRunner().invoke(main, ["export", str(module_dir / "nope.pt"), "--format", "torchscript", "--out", str(out)])
    assert r.exit_code == 1 and "not found" in r.output and "Traceback" not in r.output


def test_inputs_are_checked_against_the_spec(exported):
    from dlkdd.deploy.runtime import load_exported

    onnx_m = load_exported(exported("bert", "onnx"))
    ts_m = load_exported(exported("bert", "torchscript"))
    for m in (onnx_m, ts_m):
        with pytest.raises(ExportError, match=r"\(B,3,T,H,W\)"):
            m(torch.rand(3, 8, 32, 32))
        with pytest.raises(ExportError, match="1..512 frames, got 520"):
            m(torch.rand(1, 3, 520, 32, 32))
    with pytest.raises(ExportError, match="32x32 crops, got 40x40"):
        onnx_m(torch.rand(1, 3, 8, 40, 40))
    assert ts_m(torch.rand(1, 3, 8, 40, 40)).shape == (1, len(CLASSES))  # TorchScript: spatial size is free


def test_detect_format_and_foreign_files(exported, tmp_path):
    from dlkdd.deploy.runtime import detect_format, load_exported, load_for_predict

    onnx_path, ts_path = exported("bert", "onnx"), exported("bert", "torchscript")
    ckpt = onnx_path.with_name("bert.pt")
    assert detect_format(ckpt) is None and detect_format(onnx_path) == "onnx" and detect_format(ts_path) == "torchscript"
    renamed = tmp_path / "model.bin"  # ONNX without its suffix: told by its first protobuf byte
    renamed.symlink_to(onnx_path)
    assert detect_format(renamed) == "onnx"
    model, view = load_for_predict(ts_path)
    assert view["classes"] == CLASSES and view["config"]["clip"]["frames"] == 8 and model.runtime == "torchscript"
    # a TorchScript archive dlkdd did not write: refused with a pointer to `dlkdd export`
    foreign = tmp_path / "foreign.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.rand(1, 2)), str(foreign))
    assert zipfile.is_zipfile(foreign) and detect_format(foreign) == "torchscript"
    with pytest.raises(ExportError, match="without dlkdd metadata.*dlkdd export"):
        load_exported(foreign)
    with pytest.raises(ExportError, match="not an exported model"):
        load_exported(ckpt)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ExportError, match="ONNX Runtime cannot load it"):
        load_exported(broken)


def test_missing_extra_names_the_extra(exported, monkeypatch, module_dir):
    """Without onnx/onnxruntime: `dlkdd export --format onnx` and running an .onnx stop with one
    line naming pip install 'dlkdd[export]'; TorchScript needs no extra."""
    import sys

    onnx_path = exported("bert", "onnx")
    ts_path = exported("bert", "torchscript")
    # a None entry in sys.modules makes `import x` and importlib.import_module("x") raise ImportError,
    # as on an install without the extra; monkeypatch puts the real modules back afterwards
    for mod in [m for m in sys.modules if m.split(".")[0] in ("onnx", "onnxruntime", "onnxscript")]:
        monkeypatch.delitem(sys.modules, mod)
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        monkeypatch.setitem(sys.modules, mod, None)
    r = CliRunner().invoke(main, ["export", str(onnx_path.with_name("bert.pt")), "--format", "onnx",
                                  "--out", str(module_dir / "x.onnx")])
    assert r.exit_code == 1 and "pip install 'dlkdd[export]'" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (module_dir / "x.onnx").exists()
    from dlkdd.deploy.runtime import load_exported

    with pytest.raises(MissingExtraError, match=r"onnxruntime.*pip install 'dlkdd\[export\]'"):
        load_exported(onnx_path)
    assert load_exported(ts_path).classes == CLASSES


def test_agreement_formula():
    from dlkdd.deploy.quantize import agreement

    ref = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    other = torch.tensor([[1.5, 0.0, 0.0], [0.0, 1.0, 1.25]])
    a = agreement(ref, other)
    assert a["n"] == 2 and a["top1_agreement"] == 0.5  # the second clip's arg-max moved to class 2
    assert a["max_abs_logit_error"] == 1.25 and a["mean_abs_logit_error"] == pytest.approx(1.75 / 6)
    p_ref, p_oth = ref.softmax(-1), other.softmax(-1)
    assert a["max_prob_error"] == pytest.approx(float((p_ref - p_oth).abs().max()))


def test_int8_quantised_copy_keeps_spec_and_follows_fp32(exported, module_dir):
    """The int8 file keeps classes and clip spec (quantization marked) and stays close to fp32 on
    real clips; how close on the whole test list is in BENCHMARKS.md."""
    from dlkdd.deploy.quantize import agreement, quantize_onnx
    from dlkdd.deploy.runtime import load_exported

    fp32 = load_exported(exported("avg", "onnx"))
    out = module_dir / "avg-int8.onnx"
    quantize_onnx(fp32.path, out, dict(fp32.spec, quantization="int8-dynamic"))
    q = load_exported(out)
    assert q.classes == CLASSES and q.spec["quantization"] == "int8-dynamic" and q.spec["clip"] == fp32.spec["clip"]
    assert out.stat().st_size < 0.35 * fp32.path.stat().st_size
    x = _real_clips(8)
    a = agreement(fp32(x), q(x))
    assert 0.0 < a["max_abs_logit_error"] < 0.1  # quantised (not a copy), and close


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_teacher_with_zerodce_exports_with_its_enhancer(module_dir, fmt):
    """A teacher checkpoint exports with its (random) ZeroDCE inside: parity on real clips, and
    the enhancer matters (the classifier alone gives other logits)."""
    from dlkdd.deploy.export import export_checkpoint
    from dlkdd.deploy.runtime import load_exported

    ckpt = module_dir / "teacher.pt"
    if not ckpt.exists():
        _write_checkpoint(ckpt, "avg", teacher=True)
    out = module_dir / f"teacher.{fmt}"
    r = export_checkpoint(ckpt, out, fmt)
    assert r["kind"] == "teacher" and r["arch"]["enhancer"] == "zerodce"
    model = _eager(ckpt)
    x = _real_clips(8)
    with torch.inference_mode():
        ref, plain = model(x), model.classifier(x)
        got = load_exported(out)(x)
    assert float((got - ref).abs().max()) <= TOL
    assert float((plain - ref).abs().max()) > 10 * TOL


def test_bench_deploy_rows_without_the_extra(monkeypatch, tmp_path):
    """`dlkdd bench`'s deployed-formats table keeps working without onnx: eager and TorchScript
    are measured, the ONNX rows say "not installed"."""
    import sys

    from dlkdd.bench.deploy import bench_deploy, deploy_table
    from dlkdd.config import config_from_dict

    for mod in [m for m in sys.modules if m.split(".")[0] in ("onnx", "onnxruntime", "onnxscript")]:
        monkeypatch.delitem(sys.modules, mod)
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        monkeypatch.setitem(sys.modules, mod, None)
    cfg = config_from_dict({"clip": {"frames": 4, "stride": 2, "size": 32, "resize": 40},
                            "model": {"head": "avg", "pretrained": "", "backbone": "r2plus1d_tiny"}})
    dep = bench_deploy(cfg, CLASSES, tmp_path, repeats=1, clips=0)
    rows = {r["format"]: r for r in dep["rows"]}
    assert rows["torch eager (checkpoint)"]["status"] == rows["TorchScript (torch.jit)"]["status"] == "ok"
    assert rows["TorchScript (torch.jit)"]["max_abs_diff"] <= TOL and rows["TorchScript (torch.jit)"]["latency_ms"] > 0
    for name in ("ONNX Runtime fp32", "ONNX Runtime int8 (dynamic)"):
        assert rows[name]["status"].startswith("not installed") and "latency_ms" not in rows[name]
    md = "\n".join(deploy_table(dep))
    assert md.count("not installed (pip install 'dlkdd[export]')") == 2 and dep["int8_agreement"] is None


def test_evaluate_on_exported_equals_checkpoint(exported, tmp_path):
    """`dlkdd evaluate` takes an exported file too: same predictions as the checkpoint on a
    short real test list (one video per class)."""
    root = shared_path("arid6")
    lines = (root / "arid6_test.txt").read_text().splitlines()
    by_label: dict[str, str] = {}
    for ln in lines:
        by_label.setdefault(ln.split("\t")[1], ln)
    short = tmp_path / "short.txt"
    short.write_text("\n".join(by_label.values()) + "\n")
    args = ["--root", str(root / "clips"), "--list", str(short), "--mapping", str(root / "mapping_table.txt"),
            "--workers", "0", "--no-progress"]
    metrics = {}
    for name in ("ckpt", "onnx"):
        path = exported("avg", "onnx")
        path = path.with_name("avg.pt") if name == "ckpt" else path
        out = tmp_path / f"{name}.json"
        r = CliRunner().invoke(main, ["--device", "cpu", "evaluate", str(path), *args, "--json", str(out)])
        assert r.exit_code == 0, r.output
        metrics[name] = json.loads(out.read_text())
    assert metrics["ckpt"]["n"] == len(by_label) == len(CLASSES)
    for k in ("top1", "top5", "confusion"):
        assert metrics["onnx"][k] == metrics["ckpt"][k], k
    a, b = metrics["onnx"]["predictions"], metrics["ckpt"]["predictions"]
    assert [(r["key"], r["label"], r["pred"]) for r in a] == [(r["key"], r["label"], r["pred"]) for r in b]
    np.testing.assert_allclose([r["probs"] for r in a], [r["probs"] for r in b], atol=1e-5)  # fp32 parity


def test_retinex_enhancer_is_refused_before_exporting(tmp_path):
    """A teacher with the multi-scale Retinex enhancer cannot be exported (quantile ranks computed
    in Python): one clear error, before any slow export, and no file left behind."""
    from dlkdd.deploy.export import export_model
    from dlkdd.models.build import build_student, student_arch
    from dlkdd.models.classifier import Teacher
    from dlkdd.models.enhancers import MultiScaleRetinex

    cfg = _config("avg")
    model = Teacher(MultiScaleRetinex(), build_student(cfg, len(CLASSES)))
    ckpt = {"kind": "teacher", "arch": student_arch(cfg, len(CLASSES)), "config": cfg.to_dict(), "classes": CLASSES}
    for fmt in ("torchscript", "onnx"):
        with pytest.raises(ExportError, match="Retinex enhancer.*export the student"):
            export_model(model, ckpt, tmp_path / f"t.{fmt}", fmt)
    assert list(tmp_path.iterdir()) == []


def test_diff_model_exports_and_runs(tmp_path):
    """A ``model.input=diff`` model feeds T-1 frame differences to its trunk: the export must advertise
    (and the ONNX graph accept) one frame more than the trunk needs, and run at the spec's bounds."""
    from dlkdd.config import config_from_dict
    from dlkdd.deploy.export import export_checkpoint
    from dlkdd.deploy.runtime import load_exported
    from dlkdd.models.build import build_student, student_arch
    from dlkdd.train.checkpoint import save_checkpoint

    cfg = config_from_dict({"clip": CLIP, "model": {"head": "bert", "pretrained": "", "normalize": "dataset",
                                                    "backbone": "r2plus1d_tiny", "input": "diff"}})
    torch.manual_seed(0)
    model = build_student(cfg, len(CLASSES)).eval()
    ckpt = save_checkpoint(tmp_path / "diff.pt", kind="student", arch=student_arch(cfg, len(CLASSES)),
                           config=cfg.to_dict(), classes=CLASSES, model=model.state_dict(), epoch=0, history=[],
                           extra={})
    r = export_checkpoint(ckpt, tmp_path / "diff.onnx", "onnx")
    assert r["check"]["max_abs_diff"] <= TOL
    exported = load_exported(tmp_path / "diff.onnx")
    frames = exported.spec["dynamic"]["frames"]
    # the trunk needs >= 1 frame: a diff model >= 2; the BERT head's 64 tokens x stride 8, + 1 difference
    assert frames == {"min": 2, "max": 8 * 64 + 1}
    for t in (frames["min"], 9, 17):
        x = torch.rand(1, 3, t, CLIP["size"], CLIP["size"])
        with torch.no_grad():
            ref = model(x).float()
        assert torch.allclose(torch.as_tensor(exported(x)).float(), ref, atol=TOL)
    with pytest.raises(ExportError):
        exported(torch.rand(1, 3, 1, CLIP["size"], CLIP["size"]))
