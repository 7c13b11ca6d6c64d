"""Light students wired into dlkdd (issue 24): the backbone table's entries, ``model.pretrained: imagenet``
through the config (normalisation, the missing extra), the feature term (``kd.feature_weight``: logged,
masked, gradient into the projector, refused without stored features), the projector kept out of every
checkpoint, a cross-architecture student (an r2plus1d_tiny teacher's store -> an EfficientNet-Lite0
student) and ``dlkdd export`` of a light student with parity."""
from __future__ import annotations

import sys

import pytest
import torch

import faults
from dlkdd.config import config_from_dict, load_config
from dlkdd.config_sections import ConfigError, KDConfig
from dlkdd.errors import CacheError, CheckpointError
from dlkdd.losses import feature_loss
from dlkdd.models import efficientnet_lite as effnet
from dlkdd.models import mobilenet_v2 as mnv2
from dlkdd.models.backbones import backbone_spec
from dlkdd.models.build import build_student
from dlkdd.models.projector import FeatureProjector, ProjectedStudent
from dlkdd.train.objectives import build_objective

LIGHT = ("efficientnet_lite0", "mobilenet_v2")
# a light student on tiny clips (faults.TINY's set, 4 frames of 32x32)
LIGHT_TINY = ["model.backbone=efficientnet_lite0", "model.head=avg", "model.normalize=dataset"]


def _cfg(backbone: str, **model):
    return config_from_dict({"clip": {"frames": 4, "stride": 2, "size": 32, "resize": 40},
                             "model": {"backbone": backbone, "head": "avg", "pretrained": "", **model}})


# ---- the table's entries -----------------------------------------------------------------------

@pytest.mark.parametrize("name", LIGHT)
def test_light_backbones_follow_the_table_contract(name):
    spec = backbone_spec(name)
    torch.manual_seed(0)
    model = build_student(_cfg(name), 5).eval()
    x = torch.rand(2, 3, 3, 40, 72)
    feat = model.backbone.features(x)
    # per frame (T' = T), spatial stride 32 with ceil: 40 -> 2, 72 -> 3
    assert feat.shape == (2, spec.feature_dim, 3, 2, 3)
    logits, pooled = model(x, return_features=True)
    assert logits.shape == (2, 5) and pooled.shape == (2, spec.feature_dim)
    assert not any(k.startswith("backbone._fc") for k in model.state_dict())  # the head classifies


@pytest.mark.parametrize("name,norm,module", [("efficientnet_lite0", "inception", effnet),
                                             ("mobilenet_v2", "imagenet", mnv2)])
def test_imagenet_weights_load_through_the_config_with_their_own_input_statistics(name, norm, module):
    cfg = _cfg(name, pretrained="imagenet", normalize=norm)
    try:
        model = build_student(cfg, 4)
    except CheckpointError as e:
        pytest.skip(f"the imagenet extra is not installed: {e}")
    assert torch.allclose(model.mean.flatten(), torch.tensor(module.INPUT_MEAN))
    assert torch.allclose(model.std.flatten(), torch.tensor(module.INPUT_STD))
    ref = module.load_imagenet(backbone_spec(name).build(4), "imagenet").state_dict()
    got = model.backbone.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)


@pytest.mark.parametrize("name,norm", [("efficientnet_lite0", "inception"), ("mobilenet_v2", "imagenet")])
def test_imagenet_weights_with_other_input_statistics_are_refused(name, norm):
    with pytest.raises(ConfigError) as e:
        build_student(_cfg(name, pretrained="imagenet", normalize="dataset"), 4)
    assert f"model.normalize={norm}" in str(e.value) and "\n" not in str(e.value)


def test_a_teacher_on_imagenet_weights_needs_them_in_teacher_normalize():
    from dlkdd.models.build import build_teacher

    cfg = _cfg("mobilenet_v2", pretrained="imagenet", normalize="imagenet").replace(
        **{"model.teacher_normalize": "kinetics", "enhancer.kind": "gamma"})
    with pytest.raises(ConfigError, match="model.teacher_normalize=imagenet"):
        build_teacher(cfg, 4)


def test_imagenet_for_a_trunk_without_packaged_weights_is_a_config_error():
    with pytest.raises(ConfigError, match="no packaged ImageNet weights"):
        _cfg("r2plus1d_tiny", pretrained="imagenet", normalize="imagenet")


def test_pretrained_imagenet_is_a_name_not_a_path_and_the_preset_loads(tmp_path):
    cfg = load_config("configs/arid6-light.yaml", ["model.pretrained=imagenet"])
    assert cfg.model.pretrained == "imagenet"
    (tmp_path / "c.yaml").write_text("model:\n  pretrained: imagenet\n  backbone: mobilenet_v2\n"
                                     "  normalize: imagenet\n")
    assert load_config(tmp_path / "c.yaml").model.pretrained == "imagenet"
    light = load_config("configs/arid6-light.yaml")
    assert (light.model.backbone, light.model.normalize, light.model.head) == ("efficientnet_lite0", "inception", "avg")
    assert (light.clip.frames, light.clip.size) == (16, 112) and light.kd.feature_weight > 0 and light.cache.features


@pytest.mark.parametrize("name,package", [("efficientnet_lite0", effnet.IMAGENET_PACKAGE),
                                          ("mobilenet_v2", mnv2.IMAGENET_PACKAGE)])
def test_pretrained_imagenet_without_the_extra_names_the_install_command(monkeypatch, tmp_path, name, package):
    monkeypatch.setitem(sys.modules, package, None)  # a blocked import: find_spec -> None
    norm = backbone_spec(name).imagenet_normalize
    with pytest.raises(CheckpointError) as e:
        build_student(_cfg(name, pretrained="imagenet", normalize=norm), 4)
    assert "pip install 'dlkdd[imagenet]'" in str(e.value) and "\n" not in str(e.value)


# ---- the feature term --------------------------------------------------------------------------

def _projected(teacher_dim: int = 6) -> ProjectedStudent:
    torch.manual_seed(0)
    student = build_student(_cfg("r2plus1d_tiny", normalize="dataset"), 3)
    return ProjectedStudent(student, FeatureProjector(backbone_spec("r2plus1d_tiny").feature_dim, teacher_dim))


def _batch(teacher_features: torch.Tensor | None) -> dict:
    g = torch.Generator().manual_seed(1)
    b = {"video": torch.rand(3, 3, 4, 32, 32, generator=g), "label": torch.tensor([0, 1, 2]),
         "teacher_logits": torch.randn(3, 3, generator=g)}
    if teacher_features is not None:
        b["teacher_features"] = teacher_features
    return b


def test_feature_term_is_off_by_default_and_on_with_its_weight():
    assert [t.name for t in build_objective(KDConfig()).terms] == ["task_loss", "kd_loss"]
    assert [t.name for t in build_objective(KDConfig(feature_weight=0.5)).terms] == ["task_loss", "kd_loss",
                                                                                     "feature_loss"]
    with pytest.raises(ConfigError, match="kd.feature_weight"):
        KDConfig(feature_weight=-1.0).validate()


def test_feature_term_logged_masked_weighted_and_trains_the_projector():
    model = _projected().eval()  # deterministic: the hand computation below re-runs the model
    t = torch.randn(3, 6, generator=torch.Generator().manual_seed(2))
    t[1] = 0.0  # a clip without stored features: left out
    batch = _batch(t)
    kd = KDConfig(alpha=0.0, feature_weight=0.25)
    terms, logits = build_objective(kd)(model, batch, epoch=0)
    assert logits.shape == (3, 3) and "feature_loss" in terms
    with torch.no_grad():
        _, proj = model(batch["video"], return_features=True)
        keep = torch.tensor([0, 2])
        u = proj[keep] / proj[keep].norm(dim=1, keepdim=True)
        v = t[keep] / t[keep].norm(dim=1, keepdim=True)
        want = ((u - v) ** 2).sum(1).mean()  # FitNets hint on L2-normalised features, by hand
    assert torch.allclose(terms["feature_loss"], want, atol=1e-5)
    assert torch.allclose(feature_loss(proj[keep], t[keep]), want, atol=1e-5)  # the term wraps the pure function
    assert torch.allclose(terms["loss"], terms["task_loss"] + 0.25 * terms["feature_loss"], atol=1e-6)
    terms["loss"].backward()
    assert model.projector.proj.weight.grad is not None and model.projector.proj.weight.grad.abs().sum() > 0
    assert model.student.head.fc.weight.grad.abs().sum() > 0


def test_feature_term_with_no_clip_having_features_adds_nothing_but_keeps_the_graph():
    model = _projected()
    terms, _ = build_objective(KDConfig(feature_weight=1.0))(model, _batch(torch.zeros(3, 6)), epoch=0)
    assert float(terms["feature_loss"].detach()) == 0.0
    terms["loss"].backward()  # the projector is in the graph (DDP needs every parameter used)
    assert model.projector.proj.weight.grad is not None


def test_feature_term_without_teacher_features_is_one_line_naming_the_fix():
    with pytest.raises(CacheError) as e:
        build_objective(KDConfig(feature_weight=1.0))(_projected(), _batch(None), epoch=0)
    assert "--features" in str(e.value) and "\n" not in str(e.value)


def test_projected_student_saves_and_loads_as_the_plain_student():
    model = _projected()
    plain = model.student.state_dict()
    sd = model.state_dict()
    assert list(sd) == list(plain) and not any("proj" in k for k in sd)
    fresh = build_student(_cfg("r2plus1d_tiny", normalize="dataset"), 3)
    fresh.load_state_dict(sd)  # strict: a checkpoint of the run is a plain student
    model.load_state_dict(fresh.state_dict())
    params = {id(p) for p in model.parameters()}
    assert all(id(p) in params for p in model.projector.parameters())  # the optimiser sees the projector
    with torch.no_grad():
        x = torch.rand(1, 3, 4, 32, 32)
        assert torch.equal(model.eval()(x), model.student(x))


# ---- the student stage: a store without features, a cross-architecture student ------------------

def test_student_refuses_a_store_without_features(work, cfg, store):
    r = faults.cli(["student", "--config", cfg, *faults.sets(extra=["kd.feature_weight=1"]),
                              "--cache", store, "--out", work / "nofeat", "--no-progress"])
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert "holds no teacher features" in line and "--features" in line


def _store_rows_carry_features() -> bool:
    from dlkdd.cache.reader import StoreRows

    return hasattr(StoreRows, "read_fields")  # the data-driven store (issue 26): every stored field reaches the batch


@pytest.mark.skipif(not _store_rows_carry_features(),
                    reason="needs the data-driven logit store (StoreRows.read_fields, issue 26) that hands stored "
                           "features to the sample as teacher_features")
def test_cross_architecture_student_with_the_feature_term(work, cfg):
    """An r2plus1d_tiny teacher's store with features -> one epoch of an EfficientNet-Lite0 student."""
    from dlkdd.train.checkpoint import load_checkpoint

    teacher = faults.make_checkpoint(work / "xteacher.pt", cfg, kind="teacher")
    st = work / "xfeat.zarr"
    r = faults.cli(["cache-logits", "--config", cfg, *faults.sets(), "--teacher", teacher, "--out", st,
                              "--features", "--no-progress"])
    assert r.returncode == 0, r.stderr
    out = work / "xstudent"
    r = faults.cli(["student", "--config", cfg, *faults.sets(extra=[*LIGHT_TINY, "train.epochs=1",
                                                                              "kd.feature_weight=1"]),
                              "--cache", st, "--out", out, "--no-progress"])
    assert r.returncode == 0, r.stderr
    log = (out / "log.csv").read_text().splitlines()
    assert "train_feature_loss" in log[0].split(",")
    ckpt = load_checkpoint(out / "student.pt")
    assert ckpt["arch"]["backbone"] == "efficientnet_lite0"
    assert not any(k.startswith(("projector.", "student.")) for k in ckpt["model"])
    last = load_checkpoint(out / "last.pt")  # the projector is kept apart, for an exact resume
    assert sorted(last["train_state"]) == ["proj.bias", "proj.weight"]
    from dlkdd.models.build import model_from_checkpoint

    model_from_checkpoint(ckpt)  # loads strictly as a plain student


# ---- dlkdd export of a light student ------------------------------------------------------------

@pytest.mark.slow
def test_light_student_exports_with_parity(work, cfg):
    """``dlkdd export`` (its own parity check at --tol 1e-4) on a tiny EfficientNet-Lite0 student, 4x64x64."""
    pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'dlkdd[export]'")
    pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'dlkdd[export]'")
    ckpt = faults.make_checkpoint(work / "light.pt", cfg, extra_sets=[*LIGHT_TINY, "clip.size=64", "clip.resize=72"])
    for fmt, name in (("torchscript", "light.ts"), ("onnx", "light.onnx")):
        r = faults.cli(["export", ckpt, "--format", fmt, "--out", work / name])
        assert r.returncode == 0, r.stderr
        assert (work / name).is_file()
    from dlkdd.deploy.runtime import load_exported
    from dlkdd.pipeline.evaluate import load_model

    eager, _ = load_model(ckpt, "cpu")
    x = torch.rand(1, 3, 4, 64, 64)
    with torch.no_grad():
        want = eager(x)
    for name in ("light.ts", "light.onnx"):
        got = load_exported(work / name, threads=1)(x)
        assert torch.allclose(got.float(), want, atol=1e-4)


# ---- dlkdd bench: backbones side by side -------------------------------------------------------

def test_bench_backbones_rows_and_table(tmp_path):
    """The light preset's table on tiny clips: GMACs from FlopCounterMode, eager vs ONNX Runtime parity, ratios."""
    pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'dlkdd[export]'")
    pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'dlkdd[export]'")
    from dlkdd.bench.deploy import backbones_table, bench_backbones
    from dlkdd.bench.presets import PRESETS
    from dlkdd.models.profile import count_flops

    light = PRESETS["light"]
    assert (light.backbone, light.head, light.frames, light.size) == ("efficientnet_lite0", "avg", 16, 112)
    assert [b[1] for b in light.backbones] == ["efficientnet_lite0", "mobilenet_v2", "r2plus1d_18", "r2plus1d_34"]
    cfg = _cfg("r2plus1d_tiny", normalize="dataset")  # tiny trunks: the light ones' export is covered above
    res = bench_backbones(cfg, ["a", "b", "c"], tmp_path,
                          [("M", "r2plus1d_tiny", "avg"), ("T", "r2plus1d_tiny", "bert")], repeats=1)
    assert res["input_shape"] == [1, 3, 4, 32, 32] and [r["label"] for r in res["rows"]] == ["M", "T"]
    x = torch.rand(1, 3, 4, 32, 32)
    torch.manual_seed(0)
    want = count_flops(build_student(cfg, 3).eval(), x) / 2e9
    assert res["rows"][0]["gmacs"] == pytest.approx(want)
    for r in res["rows"]:
        assert r["onnx_status"] == "ok" and r["max_abs_diff"] < 1e-4 and r["eager_ms"] > 0 and r["onnx_ms"] > 0
    table = "\n".join(backbones_table(res))
    t = res["rows"][1]
    assert f"| T | {t['params'] / 1e6:.2f} | {t['gmacs']:.2f} |" in table
    assert f"{t['gmacs'] / res['rows'][0]['gmacs']:.1f}x" in table


@pytest.mark.parametrize("name", ["mobilenet_v2", "r2plus1d_tiny"])
def test_channels_last_of_the_cuda_path_takes_2d_and_3d_trunks(name):
    """prepare_model on CUDA used model.to(memory_format=channels_last_3d), which raises on 2-D conv weights."""
    from dlkdd.train.engine import channels_last

    torch.manual_seed(0)
    model = build_student(_cfg(name, normalize="dataset"), 3).eval()
    x = torch.rand(1, 3, 4, 32, 32)
    with torch.no_grad():
        want = model(x)
        channels_last(model)
        got = model(x)
    assert torch.allclose(got, want, atol=1e-5)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv3d):
            assert m.weight.is_contiguous(memory_format=torch.channels_last_3d)
        elif isinstance(m, torch.nn.Conv2d) and m.weight.shape[2:] != (1, 1):
            assert m.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_resumed_feature_term_run_continues_with_its_trained_projector(tmp_path):
    """``last.pt`` keeps the projector (``train_state``) apart from the student's weights; resuming loads it,
    so the optimizer's moments apply to the projector they were computed for (not a fresh one)."""
    import torch

    from dlkdd.models.projector import FeatureProjector, ProjectedStudent
    from dlkdd.train.checkpoint import resume_state, save_checkpoint

    def net(seed):
        torch.manual_seed(seed)
        return ProjectedStudent(torch.nn.Linear(4, 3), FeatureProjector(4, 5))

    a = net(0)
    save_checkpoint(tmp_path / "last.pt", kind="student", model=a.state_dict(), epoch=0,
                    train_state=a.train_state_dict())
    b = net(1)
    assert not torch.equal(a.projector.proj.weight, b.projector.proj.weight)
    resume_state(tmp_path / "last.pt", b, kind="student")
    assert torch.equal(a.projector.proj.weight, b.projector.proj.weight)
    assert torch.equal(a.student.weight, b.student.weight)
