"""Cost of the lightweight students beside R(2+1)D (issue 24), side by side, one process.

    PYTHONPATH=. .venv/bin/python tests/tools/bench_light_students.py --out /tmp/light-scratch/bench.json

Parts (all CPU, one torch / ONNX Runtime intra-op thread):
- ``cost``: params and GMACs (dlkdd.models.profile.count_flops) of EfficientNet-Lite0 / MobileNetV2 +
  average head at 16x112x112 and 8x112x112, R(2+1)D-18 + BERT at 16x112x112, R(2+1)D-34 + BERT at
  64x112x112 (the paper's student; the IG65M variant differs only in its mid-plane rounding);
- ``latency``: batch-1 clips at 16x112x112, EfficientNet-Lite0 + avg vs R(2+1)D-18 + BERT: torch eager
  and ONNX Runtime fp32 (+ static int8 of the light model, QDQ, calibrated on 16 arid6 training clips,
  stem / first 3 blocks / head conv left in fp32),
  timed round robin (each repeat runs every variant once);
- ``train``: training-step clips/s at 8x112x112 (batch 4, SGD, CE + KD against random teacher logits),
  round robin.
The light classifier here is normalise -> trunk.features -> AvgHead (the real Classifier wiring of
the backbone table is the lead's).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dlkdd.losses import kd_loss
from dlkdd.models import efficientnet_lite as effnet
from dlkdd.models import mobilenet_v2 as mnv2
from dlkdd.models.bert_head import AvgHead
from dlkdd.models.classifier import Classifier
from dlkdd.models.profile import count_flops

NUM_CLASSES = 6


class LightClassifier(nn.Module):
    """(B,3,T,H,W) in [0,1] -> normalise -> per-frame trunk -> average head -> logits."""

    def __init__(self, trunk: nn.Module, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1, 1))
        self.trunk = trunk
        self.head = AvgHead(trunk.feature_dim, NUM_CLASSES, head_dropout=0.5)

    def forward(self, x):
        return self.head(self.trunk.features((x - self.mean) / self.std))


def light(name: str, shift: bool = True) -> nn.Module:
    if name == "efficientnet_lite0":
        trunk = effnet.load_imagenet(effnet.build_efficientnet_lite0(shift=shift))
        return LightClassifier(trunk, effnet.INPUT_MEAN, effnet.INPUT_STD)
    return LightClassifier(mnv2.load_imagenet(mnv2.build_mobilenet_v2(shift=shift)), mnv2.INPUT_MEAN, mnv2.INPUT_STD)


def r2plus1d(name: str) -> nn.Module:
    return Classifier(name, NUM_CLASSES, head="bert")


def cost() -> list[dict]:
    rows = []
    for label, build, t in [("EfficientNet-Lite0 (TSM) + avg", lambda: light("efficientnet_lite0"), 16),
                            ("EfficientNet-Lite0 (TSM) + avg", lambda: light("efficientnet_lite0"), 8),
                            ("MobileNetV2 (TSM) + avg", lambda: light("mobilenet_v2"), 16),
                            ("MobileNetV2 (TSM) + avg", lambda: light("mobilenet_v2"), 8),
                            ("R(2+1)D-18 + BERT", lambda: r2plus1d("r2plus1d_18"), 16),
                            ("R(2+1)D-18 + BERT", lambda: r2plus1d("r2plus1d_18"), 8),
                            ("R(2+1)D-34 + BERT (paper's student)", lambda: r2plus1d("r2plus1d_34"), 64)]:
        m = build().eval()
        flops = count_flops(m, torch.rand(1, 3, t, 112, 112))
        rows.append({"model": label, "clip": f"{t}x112x112", "params_M": sum(p.numel() for p in m.parameters()) / 1e6,
                     "gmacs": flops / 2e9})
        print(rows[-1], flush=True)
    return rows


def _export(model: nn.Module, x: torch.Tensor, path: Path) -> Path:
    prog = torch.onnx.export(model, (x,), dynamo=True, input_names=["clip"], output_names=["logits"],
                             opset_version=18, verbose=False, external_data=False)
    prog.save(path, external_data=False)
    return path


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _calibration_clips(n: int, frames: int) -> list[torch.Tensor]:
    """Centred 112x112 views of the first ``n`` arid6 training clips (the int8 calibration set)."""
    from dlkdd.config import load_config
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.data.video import probe
    from dlkdd.data.views import center_view, load_clips

    cfg = load_config("configs/arid6-mini.yaml", [f"clip.frames={frames}", "clip.size=112", "clip.resize=128"])
    clips = []
    for e in list(manifest_from_config(cfg.data, "train"))[:n]:
        info = probe(e.path)
        clips += load_clips(e.path, [center_view(info.num_frames, cfg.clip, info.height, info.width)], cfg.clip.size)
    return clips


def _static_int8(src: Path, dst: Path, clips: list[torch.Tensor]) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"clip": c[None].numpy()} for c in clips])

        def get_next(self):
            return next(self.it, None)

    import onnx

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))
    # keep fp32: the stem and the first 3 blocks (8 convs, full resolution on dark frames) and the 1x1 head
    # conv; quantising them too moved the pooled features far more (mean cosine 0.94 vs 0.998 to fp32)
    convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=convs[:8] + convs[-1:])
    return dst


def _round_robin(fns: dict, repeats: int) -> dict[str, float]:
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def latency(frames: int, repeats: int, work: Path) -> dict:
    torch.manual_seed(0)
    models = {"efficientnet_lite0": light("efficientnet_lite0").eval(), "r2plus1d_18": r2plus1d("r2plus1d_18").eval()}
    x = torch.rand(1, 3, frames, 112, 112)
    sessions = {k: _session(_export(m, x, work / f"{k}.onnx")) for k, m in models.items()}
    clips = _calibration_clips(16, frames)
    int8 = _session(_static_int8(work / "efficientnet_lite0.onnx", work / "efficientnet_lite0.int8.onnx", clips))
    xn = x.numpy()
    fns = {}
    for k, m in models.items():
        fns[f"{k} eager"] = lambda m=m: m(x)
        fns[f"{k} ort fp32"] = lambda s=sessions[k]: s.run(None, {"clip": xn})
    fns["efficientnet_lite0 ort int8 (static)"] = lambda: int8.run(None, {"clip": xn})
    with torch.inference_mode():
        ms = _round_robin(fns, repeats)
    # int8 vs fp32 on 8 other training clips (the head is untrained: compare relative logit error, top-1)
    batch = torch.stack(_calibration_clips(24, frames)[16:]).numpy()
    ref = torch.cat([torch.from_numpy(sessions["efficientnet_lite0"].run(None, {"clip": c[None]})[0]) for c in batch])
    q = torch.cat([torch.from_numpy(int8.run(None, {"clip": c[None]})[0]) for c in batch])
    err = {"rel_logit_err": float((q - ref).norm() / ref.norm()), "max_abs_logit_err": float((q - ref).abs().max()),
           "logit_std": float(ref.std()), "top1_agreement": float((q.argmax(1) == ref.argmax(1)).float().mean())}
    sizes = {k: (work / f"{k}.onnx").stat().st_size / 2**20 for k in models}
    sizes["efficientnet_lite0 int8"] = (work / "efficientnet_lite0.int8.onnx").stat().st_size / 2**20
    return {"clip": f"{frames}x112x112", "latency_ms": ms, "onnx_mb": sizes,
            "int8_vs_fp32": err}


def train_step(frames: int, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    models = {"efficientnet_lite0": light("efficientnet_lite0").train(), "r2plus1d_18": r2plus1d("r2plus1d_18").train()}
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}
    x = torch.rand(batch, 3, frames, 112, 112)
    y = torch.randint(0, NUM_CLASSES, (batch,))
    zt = torch.randn(batch, NUM_CLASSES)

    def step(k):
        opts[k].zero_grad(set_to_none=True)
        z = models[k](x)
        loss = F.cross_entropy(z, y) + kd_loss(z, zt, 5.0)
        loss.backward()
        opts[k].step()

    ms = _round_robin({k: (lambda k=k: step(k)) for k in models}, steps)
    return {"clip": f"{frames}x112x112", "batch": batch, "step_ms": ms,
            "clips_per_s": {k: batch / (v / 1000) for k, v in ms.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--parts", default="cost,latency,train")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    for part in a.parts.split(","):
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix="light-bench-") as tmp:
            if part == "cost":
                res["cost"] = cost()
            elif part == "latency":
                res["latency"] = latency(16, a.repeats, Path(tmp))
            elif part == "train":
                res["train"] = train_step(8, 4, a.repeats)
        res.setdefault("seconds", {})[part] = time.time() - t0
        print(part, json.dumps(res[part], indent=1), flush=True)
        out.write_text(json.dumps(res, indent=1))  # resumable: each part saved as it ends


if __name__ == "__main__":
    main()
