"""The deployed student side by side: torch eager, TorchScript, ONNX Runtime fp32 and int8.

``bench_deploy(cfg, classes, work_dir, repeats, clips)``: the preset's student (untrained weights:
costs do not depend on their values) at the preset's clip shape is written as a checkpoint,
exported to TorchScript and ONNX (:mod:`dlkdd.deploy.export`) and quantised to int8
(:mod:`dlkdd.deploy.quantize`); each is run at batch 1 ``(1,3,T,S,S)`` on the CPU. Returns::

    {"input_shape", "threads", "rows": [{"format", "file", "bytes", "export_s", "latency_ms",
      "vs_eager", "max_abs_diff", "status"}, ...], "int8_agreement": {...} | None}

Latency: two warm-up calls each, then ``repeats`` rounds in which every format runs once in turn
(round-robin, so load from other jobs hits all alike); the median per format. ONNX Runtime gets
as many intra-op threads as torch has. ``max_abs_diff``: largest logit difference from eager on
the timed clip. ``int8_agreement``: :func:`dlkdd.deploy.quantize.agreement` of int8 vs fp32 ONNX
Runtime (and fp32 vs eager) on the centred views of up to ``clips`` test videos of the preset's
data (arid6 when present). Without the export extra the ONNX rows say ``not installed``.
"""
from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

log = logging.getLogger(__name__)

__all__ = ["bench_deploy", "deploy_table"]


def _test_clips(cfg: Any, limit: int) -> torch.Tensor | None:
    """Centred test views (N,3,T,S,S) of the first ``limit`` videos of ``cfg``'s test list."""
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.data.video import probe
    from dlkdd.data.views import center_view, load_clips

    if limit <= 0:
        return None
    try:
        manifest = manifest_from_config(cfg.data, "test")
    except Exception as e:  # no test list: the agreement is skipped, not the benchmark
        log.warning("deploy bench: no test clips for the int8 agreement (%s)", e)
        return None
    clips = []
    for e in list(manifest)[:limit]:
        info = probe(e.path)
        clips += load_clips(e.path, [center_view(info.num_frames, cfg.clip, info.height, info.width)], cfg.clip.size)
    return torch.stack(clips) if clips else None


def _logits(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = 8) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([fn(x[i:i + batch]).float() for i in range(0, len(x), batch)])


def bench_deploy(cfg: Any, classes: Sequence[str], work_dir: str | Path, repeats: int = 5,
                 clips: int = 64) -> dict[str, Any]:
    from dlkdd.deploy.export import export_model
    from dlkdd.deploy.spec import MissingExtraError
    from dlkdd.models.build import build_student, student_arch
    from dlkdd.train.checkpoint import save_checkpoint

    work = Path(work_dir) / "deploy"
    work.mkdir(parents=True, exist_ok=True)
    n = len(classes)
    torch.manual_seed(0)
    student = build_student(cfg, n).eval()
    ckpt = {"kind": "student", "arch": student_arch(cfg, n), "config": cfg.to_dict(), "classes": list(classes)}
    ckpt_path = save_checkpoint(work / "student.pt", model=student.state_dict(), **ckpt)
    shape = (1, 3, cfg.clip.frames, cfg.clip.size, cfg.clip.size)
    threads = torch.get_num_threads()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))

    rows: list[dict[str, Any]] = [{"format": "torch eager (checkpoint)", "file": ckpt_path.name,
                                   "bytes": ckpt_path.stat().st_size, "export_s": None, "status": "ok"}]
    runners: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {rows[0]["format"]: student}
    onnx_fp32 = None
    for fmt, title, name in (("torchscript", "TorchScript (torch.jit)", "student.ts"),
                             ("onnx", "ONNX Runtime fp32", "student.onnx")):
        row: dict[str, Any] = {"format": title, "file": name, "bytes": None, "export_s": None}
        rows.append(row)
        t0 = time.perf_counter()
        try:
            r = export_model(student, ckpt, work / name, fmt, source=ckpt_path, check=False)
        except MissingExtraError:
            row["status"] = "not installed (pip install 'dlkdd[export]')"
            continue
        row.update(export_s=time.perf_counter() - t0, bytes=r["bytes"], status="ok")
        runners[title] = _load(work / name, threads)
        if fmt == "onnx":
            onnx_fp32 = runners[title]
    int8 = None
    title = "ONNX Runtime int8 (dynamic)"
    row = {"format": title, "file": "student-int8.onnx", "bytes": None, "export_s": None}
    rows.append(row)
    if onnx_fp32 is None:
        row["status"] = "not installed (pip install 'dlkdd[export]')"
    else:
        from dlkdd.deploy.quantize import quantize_onnx

        t0 = time.perf_counter()
        quantize_onnx(work / "student.onnx", work / row["file"], dict(onnx_fp32.spec, quantization="int8-dynamic"))
        row.update(export_s=time.perf_counter() - t0, bytes=(work / row["file"]).stat().st_size, status="ok")
        int8 = runners[title] = _load(work / row["file"], threads)

    times = _time_round_robin(runners, x, repeats)
    with torch.inference_mode():
        ref = student(x)
        diffs = {k: float((fn(x) - ref).abs().max()) for k, fn in runners.items()}
    eager_ms = times[rows[0]["format"]]
    for row in rows:
        if row["format"] in times:
            row.update(latency_ms=times[row["format"]], vs_eager=times[row["format"]] / eager_ms,
                       max_abs_diff=diffs[row["format"]])
    result: dict[str, Any] = {"input_shape": list(shape), "threads": threads, "repeats": repeats, "rows": rows,
                              "backbone": cfg.model.backbone, "head": cfg.model.head, "int8_agreement": None}
    if int8 is not None:
        data = _test_clips(cfg, clips)
        if data is not None:
            from dlkdd.deploy.quantize import agreement

            fp32_logits = _logits(onnx_fp32, data)
            result["int8_agreement"] = {"int8_vs_fp32": agreement(fp32_logits, _logits(int8, data)),
                                        "fp32_vs_eager": agreement(_logits(student, data), fp32_logits),
                                        "clip_shape": list(data.shape[1:]), "weights": "untrained (random init)"}
    return result


def _load(path: Path, threads: int):
    from dlkdd.deploy.runtime import load_exported

    return load_exported(path, threads=threads)


def _time_round_robin(runners: dict[str, Callable], x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms per runner over ``repeats`` round-robin rounds, after two warm-up calls each
    (TorchScript's profiling executor optimises the graph on its second call)."""
    samples: dict[str, list[float]] = {k: [] for k in runners}
    with torch.inference_mode():
        for fn in runners.values():
            fn(x)
            fn(x)
        for _ in range(max(1, repeats)):
            for k, fn in runners.items():
                t0 = time.perf_counter()
                fn(x)
                samples[k].append((time.perf_counter() - t0) * 1000.0)
    return {k: statistics.median(v) for k, v in samples.items()}


def deploy_table(dep: dict[str, Any]) -> list[str]:
    """Markdown lines of the deployed-formats table (for :mod:`dlkdd.bench.report`)."""
    shape = "x".join(str(v) for v in dep["input_shape"])
    L = ["", f"#### Deployed formats: {dep['backbone']} + {dep['head']}, batch {shape}, CPU, "
         f"{dep['threads']} thread(s)", "",
         f"Median of {dep['repeats']} round-robin calls each, after two warm-ups; max |Δlogit| against torch eager "
         "on the timed clip.", "",
         "| format | file | size (MB) | latency (ms) | vs eager | max abs logit diff |", "|---|---|---|---|---|---|"]
    for r in dep["rows"]:
        if r.get("status") != "ok":
            L.append(f"| {r['format']} | {r['file']} | - | {r['status']} | - | - |")
            continue
        L.append(f"| {r['format']} | {r['file']} | {r['bytes'] / 1e6:,.1f} | {r['latency_ms']:,.1f} | "
                 f"{r['vs_eager']:.2f}x | {r['max_abs_diff']:.1e} |")
    a = dep.get("int8_agreement")
    if a:
        q, f = a["int8_vs_fp32"], a["fp32_vs_eager"]
        L += ["", f"int8 vs fp32 ONNX Runtime on {q['n']} test clips ({'x'.join(map(str, a['clip_shape']))}, "
              f"{a['weights']} weights): same top-1 class {100 * q['top1_agreement']:.1f}%, max |Δlogit| "
              f"{q['max_abs_logit_error']:.3g} (mean {q['mean_abs_logit_error']:.3g}), "
              f"max |Δprob| {q['max_prob_error']:.3g}. fp32 ONNX Runtime vs eager: top-1 "
              f"{100 * f['top1_agreement']:.1f}%, max |Δlogit| {f['max_abs_logit_error']:.2g}."]
    return L
