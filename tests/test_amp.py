"""Mixed precision (dlkdd.train.amp): which CPUs get bf16 under ``train.amp=auto``, fp32 forced is
today's exact computation, bf16 training records its choice, and bf16 teacher inference keeps the
logit store's promise (a run resumed after a kill gives the same logits, bit for bit)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dlkdd.train import amp as amp_mod
from dlkdd.train.amp import amp_name, autocast_dtype, cpu_flags, cpu_native_bf16, infer, resolve_amp


# ------------------------------------------------------------------------------------ detection
@pytest.mark.parametrize("machine,capability,flags,expected", [
    ("x86_64", "AVX512", {"avx512f", "avx512_bf16"}, True),   # AMD Zen 4 / Intel Cooper Lake
    ("x86_64", "AVX512", {"avx512f", "amx_bf16"}, True),      # Intel Sapphire Rapids (AMX)
    ("x86_64", "AVX512", {"avx512f", "avx512bw"}, False),     # Skylake-X: AVX512 but bf16 only emulated
    ("x86_64", "AVX2", {"avx2", "avx512_bf16"}, False),       # torch not dispatching AVX512 kernels
    ("x86_64", "DEFAULT", set(), False),
    ("aarch64", "SVE256", {"fp", "asimd", "bf16"}, True),     # Graviton 3
    ("aarch64", "DEFAULT", {"fp", "asimd"}, False),           # Graviton 2
])
def test_cpu_native_bf16_from_capability_and_flags(machine, capability, flags, expected):
    assert cpu_native_bf16(capability, flags, machine, env="") is expected


def test_env_override_wins_over_detection():
    assert cpu_native_bf16("AVX2", set(), "x86_64", env="1") is True
    assert cpu_native_bf16("AVX512", {"avx512_bf16"}, "x86_64", env="0") is False


def test_cpu_flags_parses_x86_and_arm_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                   "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(str(x86)) == {"fpu", "avx512f", "avx512_bf16"}  # the first processor's
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 sve\n")
    assert "bf16" in cpu_flags(str(arm))
    assert cpu_flags(str(tmp_path / "absent")) == frozenset()


def test_autocast_dtype_per_setting_and_device():
    assert autocast_dtype("fp32", "cuda") is None
    assert autocast_dtype("bf16", "cpu", native_bf16=False) is torch.bfloat16
    assert autocast_dtype("auto", "cuda") is torch.bfloat16
    assert autocast_dtype("auto", "cpu", native_bf16=True) is torch.bfloat16
    assert autocast_dtype("auto", "cpu", native_bf16=False) is None
    with pytest.raises(ValueError, match="auto, bf16 or fp32"):
        autocast_dtype("fp16", "cpu")


def test_resolve_amp_logs_the_choice_and_the_reason(monkeypatch, caplog):
    caplog.set_level("INFO", logger="dlkdd.train.amp")
    monkeypatch.setenv(amp_mod.ENV_OVERRIDE, "1")
    assert resolve_amp("auto", "cpu") == "bf16"
    monkeypatch.setenv(amp_mod.ENV_OVERRIDE, "0")
    assert resolve_amp("auto", "cpu") == "fp32"
    assert resolve_amp("bf16", "cpu") == "bf16"
    text = caplog.text
    assert "bf16 autocast (amp=auto, CPU with native bf16)" in text
    assert "fp32 (amp=auto, CPU without native bf16)" in text
    assert "bf16 autocast (amp=bf16)" in text
    assert amp_name(None) == "fp32" and amp_name(torch.bfloat16) == "bf16"


# ------------------------------------------------------------------------------------ training
class _Tiny(nn.Module):
    """Conv3d -> ReLU -> mean -> linear: (B,3,T,H,W) -> (B,C)."""

    def __init__(self, c=3):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, c)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3, 4)))


def _batches(n=3, b=2):
    g = torch.Generator().manual_seed(1)
    return [{"video": torch.rand(b, 3, 2, 6, 6, generator=g), "label": torch.randint(0, 3, (b,), generator=g),
             "key": [f"k{i}_{j}" for j in range(b)]} for i in range(n)]


def test_fp32_forced_is_todays_computation_on_a_bf16_cpu(monkeypatch):
    """amp=fp32 on a CPU detected as bf16-capable: autocast is never entered and the loss and the
    weights equal those of a plain fp32 loop (the engine before amp.py), bit for bit."""
    from dlkdd.config import TrainConfig
    from dlkdd.train.engine import EpochRun, train_one_epoch
    from dlkdd.train.objectives import CrossEntropyObjective

    monkeypatch.setenv(amp_mod.ENV_OVERRIDE, "1")
    batches = _batches()
    torch.manual_seed(0)
    ref = _Tiny()
    model = _Tiny()
    model.load_state_dict(ref.state_dict())
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    losses = []
    for b in batches:  # the old code path: no autocast context at all on CPU
        loss = nn.functional.cross_entropy(ref(b["video"]), b["label"])
        opt_ref.zero_grad()
        loss.backward()
        opt_ref.step()
        losses.append(float(loss.detach()))

    def no_autocast(*a, **k):
        raise AssertionError("autocast entered under amp=fp32")

    monkeypatch.setattr(torch, "autocast", no_autocast)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    m = train_one_epoch(model, batches, CrossEntropyObjective(), opt, None, 0, TrainConfig(amp="fp32"),
                        EpochRun("cpu", progress=False))
    assert m["loss"] == pytest.approx(float(np.mean(losses)), rel=0, abs=1e-12)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


def test_auto_on_a_bf16_cpu_trains_in_bf16_and_records_it(monkeypatch, tmp_path):
    from dlkdd.train.checkpoint import load_checkpoint
    from dlkdd.config import Config
    from dlkdd.train.fit import FitRun, Stage, fit
    from dlkdd.train.objectives import CrossEntropyObjective

    seen = []
    obj = CrossEntropyObjective()

    def loss_fn(model, batch, epoch):
        seen.append(torch.is_autocast_enabled("cpu"))
        terms, logits = obj(model, batch, epoch)
        seen.append(logits.dtype)
        return terms, logits

    for native, want in (("1", "bf16"), ("0", "fp32")):
        monkeypatch.setenv(amp_mod.ENV_OVERRIDE, native)
        seen.clear()
        torch.manual_seed(0)
        model = _Tiny()
        out = tmp_path / want
        samples = [{"video": b["video"][j], "label": int(b["label"][j]), "key": b["key"][j]}
                   for b in _batches() for j in range(len(b["key"]))]
        cfg = Config().replace(**{"train.epochs": 1, "train.batch_size": 2, "train.workers": 0, "train.lr": 1e-2,
                                  "train.amp": "auto"})
        final = fit(cfg, model, samples, None, loss_fn, out, Stage("student", {"num_classes": 3}, ["a", "b", "c"]),
                    FitRun(progress=False))
        assert final["amp"] == want
        assert json.loads((out / "metrics.json").read_text())["amp"] == want
        assert load_checkpoint(out / "last.pt")["extra"]["amp"] == want
        assert seen[0] is (want == "bf16")
        assert seen[1] == (torch.bfloat16 if want == "bf16" else torch.float32)
        assert np.isfinite(final["train"]["loss"])


# ------------------------------------------------------------------------------------ inference
def test_infer_under_bf16_gives_each_row_the_same_logits_whatever_its_chunk():
    """Padded fixed-size chunks: a row's bf16 result does not depend on the rows beside it or on
    its position, so scoring rows 3..7 alone equals scoring 0..7 together."""
    torch.manual_seed(0)
    model = _Tiny(5).eval()
    x = torch.rand(8, 3, 2, 6, 6)
    full = infer(model, x, 3, torch.bfloat16, "cpu")
    part = infer(model, x[3:], 3, torch.bfloat16, "cpu")
    one = infer(model, x[5:6], 3, torch.bfloat16, "cpu")
    assert full.dtype == torch.float32 and full.shape == (8, 5)
    assert torch.equal(full[3:], part)
    assert torch.equal(full[5:6], one)
    fp32 = infer(model, x, 3, None, "cpu")
    with torch.no_grad():  # fp32: chunks as before, unpadded
        assert torch.equal(fp32, torch.cat([model(x[j:j + 3]) for j in range(0, 8, 3)]))
    assert not torch.equal(full, fp32)  # bf16 really ran
    torch.testing.assert_close(full, fp32, rtol=0.05, atol=0.05)


@pytest.fixture(scope="module")
def tiny_teacher(module_dir):
    from dlkdd.config import load_config
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.data.synth import make_synthetic
    from dlkdd.models.build import build_teacher, teacher_arch
    from dlkdd.train.checkpoint import save_checkpoint

    d = module_dir
    paths = make_synthetic(d / "data", classes=2, clips_per_class=4, frames=12, size=(32, 40), seed=2)
    sets = ["clip.frames=4", "clip.stride=2", "clip.size=32", "clip.resize=36", "enhancer.kind=gamma",
            "model.head=avg", "model.backbone=r2plus1d_tiny", "cache.views=2", "cache.batch_size=3", f"cache.dir={d / 'cache'}", "train.workers=0"]
    cfg = load_config(paths["config"], sets)
    classes = list(manifest_from_config(cfg.data, "train").classes)
    torch.manual_seed(0)  # an untrained teacher: the cache only has to be reproducible
    teacher = build_teacher(cfg, len(classes))
    ckpt = save_checkpoint(d / "teacher.pt", kind="teacher", arch=teacher_arch(cfg, len(classes)),
                           config=cfg.to_dict(), classes=classes, model=teacher.state_dict(), epoch=0)
    return {"dir": d, "cfg": cfg, "teacher": ckpt, "config_path": paths["config"]}


def test_bf16_cache_logits_resumed_after_a_kill_equal_an_uninterrupted_run(tiny_teacher, monkeypatch):
    """cache-logits under bf16 with K=2 views and chunks of 3: chunks straddle clips, and a resumed
    run groups other clips together; its float16 logits still equal the uninterrupted run's."""
    from dlkdd.pipeline import cache_logits as precompute
    from dlkdd.cache.store import LogitStore

    d, cfg = tiny_teacher["dir"], tiny_teacher["cfg"].replace(**{"train.amp": "bf16"})
    ref = precompute.precompute_logits(cfg, tiny_teacher["teacher"], out=d / "ref.zarr", device="cpu",
                                       progress=False)
    fp32 = precompute.precompute_logits(cfg.replace(**{"train.amp": "fp32"}), tiny_teacher["teacher"],
                                        out=d / "fp32.zarr", device="cpu", progress=False)
    real = LogitStore.write_many

    def dies_after_one_row(self, rows, logits, views, features=None):
        real(self, rows[:1], logits[:1], views[:1])
        raise KeyboardInterrupt  # the "kill": one clip stored, so the rerun pairs other clips in its chunks

    monkeypatch.setattr(LogitStore, "write_many", dies_after_one_row)
    with pytest.raises(KeyboardInterrupt):
        precompute.precompute_logits(cfg, tiny_teacher["teacher"], out=d / "killed.zarr", device="cpu",
                                     progress=False)
    monkeypatch.setattr(LogitStore, "write_many", real)
    with LogitStore.open(d / "killed.zarr") as s:
        assert int(s.done.sum()) == 1 and s.num_clips > 2
    precompute.precompute_logits(cfg, tiny_teacher["teacher"], out=d / "killed.zarr", device="cpu", progress=False)
    with LogitStore.open(ref) as a, LogitStore.open(d / "killed.zarr") as b, LogitStore.open(fp32) as c:
        assert a.meta["teacher_amp"] == "bf16" and c.meta["teacher_amp"] == "fp32"
        assert b.is_complete and a.dtype == "float16"
        (la, va), (lb, vb), (lc, _) = a.read_all(), b.read_all(), c.read_all()
    np.testing.assert_array_equal(va, vb)
    np.testing.assert_array_equal(la, lb)  # bit for bit
    assert not np.array_equal(la, lc)  # bf16 really ran ...
    np.testing.assert_allclose(la, lc, rtol=0.05, atol=0.05)  # ... and agrees with fp32 to bf16 precision


def test_evaluate_and_predict_use_the_checkpoints_amp_or_the_given_one(tiny_teacher, monkeypatch):
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.pipeline.evaluate import evaluate_checkpoint, load_model, predict_video

    monkeypatch.setenv(amp_mod.ENV_OVERRIDE, "1")
    cfg, ckpt = tiny_teacher["cfg"], tiny_teacher["teacher"]
    test = manifest_from_config(cfg.data, "test")
    m16 = evaluate_checkpoint(ckpt, test, device="cpu", workers=0, progress=False)  # checkpoint: train.amp=auto
    m32 = evaluate_checkpoint(ckpt, test, device="cpu", workers=0, progress=False, amp="fp32")
    assert (m16["amp"], m32["amp"]) == ("bf16", "fp32")
    assert m16["n"] == m32["n"] == len(test)
    model, ck = load_model(ckpt)
    p16 = predict_video(model, ck, test[0].path, "cpu", topk=2)
    p32 = predict_video(model, ck, test[0].path, "cpu", topk=2, amp="fp32")
    assert [t["label"] for t in p16["top"]] == [t["label"] for t in p32["top"]] or \
        abs(p32["top"][0]["prob"] - p32["top"][1]["prob"]) < 0.02  # bf16 may only swap near-ties
    assert p16["top"][0]["prob"] == pytest.approx(
        next(t["prob"] for t in p32["top"] if t["label"] == p16["top"][0]["label"]), abs=0.02)


def test_evaluate_cli_amp_option_is_recorded(tiny_teacher, tmp_path):
    from click.testing import CliRunner

    from dlkdd.cli import main

    out = tmp_path / "m.json"
    r = CliRunner().invoke(main, ["--device", "cpu", "evaluate", str(tiny_teacher["teacher"]), "--config",
                                  str(tiny_teacher["config_path"]), "--set", "clip.frames=4", "--set", "clip.stride=2",
                                  "--set", "clip.size=32", "--set", "clip.resize=36", "--workers", "0", "--amp", "bf16",
                                  "--json", str(out), "--no-progress"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["amp"] == "bf16"


def test_auto_uses_fp32_where_the_bf16_probe_fails(monkeypatch):
    """A CPU with the bf16 flags whose bf16 convolution gradients are wrong (found on an AMD EPYC: a
    (3,1,1) Conv3d's weight gradient non-finite on 2 frames) trains in fp32 under amp=auto; bf16 still forces it."""
    monkeypatch.delenv(amp_mod.ENV_OVERRIDE, raising=False)
    monkeypatch.setattr(amp_mod, "cpu_native_bf16", lambda *a, **k: True)
    for err, expected in ((float("inf"), None), (0.5, None), (0.003, torch.bfloat16)):
        amp_mod.cpu_bf16_sound.cache_clear()
        monkeypatch.setattr(amp_mod, "_probe_error", lambda err=err: err)
        assert autocast_dtype("auto", "cpu") is expected
        assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    amp_mod.cpu_bf16_sound.cache_clear()
    monkeypatch.setenv(amp_mod.ENV_OVERRIDE, "1")  # the override decides alone: no probe
    monkeypatch.setattr(amp_mod, "_probe_error", lambda: float("inf"))
    assert autocast_dtype("auto", "cpu") is torch.bfloat16
    amp_mod.cpu_bf16_sound.cache_clear()


def test_the_bf16_probe_measures_against_fp32():
    """The probe runs here and returns a relative error (inf when bf16 gradients are non-finite)."""
    err = amp_mod._probe_error()
    assert err >= 0.0 and (err == float("inf") or err < 1.0)
