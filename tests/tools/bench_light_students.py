"""Static int8 of the EfficientNet-Lite0 student (issue 24): what ``dlkdd bench`` does not cover.

    PYTHONPATH=. .venv/bin/python tests/tools/bench_light_students.py --out /tmp/light-scratch/int8.json

Params, GMACs and eager / ONNX Runtime fp32 latency of every backbone beside R(2+1)D-18/34 are
``dlkdd bench --preset light --threads 1``; the training epoch rate is ``dlkdd student --no-kd`` on
``configs/arid6-light.yaml`` vs ``configs/arid6-mini.yaml`` (BENCHMARKS.md, "Lightweight students").
This script adds ONNX Runtime *static* int8 (QDQ, calibrated on 16 centred arid6 training clips; the
stem, the first 3 blocks and the head conv left in fp32) of the EfficientNet-Lite0 + avg student at
16x112x112, timed round robin beside its fp32 export and R(2+1)D-18 + BERT (one thread), and its
agreement with fp32 on 8 other training clips. The students are built through the backbone table
(``dlkdd.models.build.build_student``), ImageNet weights on the light one.

The recipe found here is now wired: ``dlkdd export --int8 static`` (the fp32 modules per trunk in the
backbone table's ``int8_fp32_modules``) and the static int8 column of ``dlkdd bench --preset light``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

NUM_CLASSES = 6


def light(name: str = "efficientnet_lite0") -> nn.Module:
    from dlkdd.config import load_config
    from dlkdd.models.build import build_student

    return build_student(load_config("configs/arid6-light.yaml", [f"model.backbone={name}"]), NUM_CLASSES)


def r2plus1d(name: str) -> nn.Module:
    from dlkdd.config import load_config
    from dlkdd.models.build import build_student

    return build_student(load_config("configs/arid6-mini.yaml", [f"model.backbone={name}"]), NUM_CLASSES)


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



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="light-bench-") as tmp:
        res = {"latency": latency(16, a.repeats, Path(tmp))}
    res["seconds"] = time.time() - t0
    print(json.dumps(res, indent=1), flush=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
