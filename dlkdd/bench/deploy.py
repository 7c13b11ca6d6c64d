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

``bench_backbones(cfg, classes, work_dir, backbones, repeats)``: several students side by side at the
preset's clip shape, ``backbones`` ``[(label, backbone, head), ...]`` (the ``light`` preset: the light
trunks beside R(2+1)D-18/34): parameters, GMACs (FlopCounterMode, :func:`dlkdd.models.profile.count_flops`)
and the batch-1 latency of torch eager, of ONNX Runtime fp32 (exported through the same
:func:`dlkdd.deploy.export.export_model` as ``dlkdd export``) and, for trunks with a static int8 recipe
in the backbone table, of ONNX Runtime static int8 (:func:`dlkdd.deploy.export.static_int8_copy`, what
``dlkdd export --int8 static`` writes: calibrated on ``int8_calib_clips`` centred clips of the preset's
training list, checked on others), every runner timed round-robin in one run::

    {"input_shape", "threads", "repeats", "rows": [{"label", "backbone", "head", "params", "gmacs",
      "eager_ms", "onnx_ms", "onnx_status", "max_abs_diff", "int8_ms", "int8_status", "int8_check"}, ...]}

``int8_status``: ``ok``, ``no recipe`` (the trunk has none: ``dlkdd export --int8 static`` refuses it)
or the error; ``int8_check``: the export's agreement of int8 with fp32 on the held training clips.
"""
from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

log = logging.getLogger(__name__)

__all__ = ["bench_deploy", "deploy_table", "bench_backbones", "backbones_table"]


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

    work = Path(work_dir) / "deploy"
    work.mkdir(parents=True, exist_ok=True)
    student, ckpt, ckpt_path = _student_checkpoint(cfg, classes, work / "student.pt")
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


def _student_checkpoint(cfg: Any, classes: Sequence[str], path: Path) -> tuple[Any, dict[str, Any], Path]:
    """``(untrained student in eval mode, checkpoint fields, checkpoint path)`` of ``cfg``'s student."""
    from dlkdd.models.build import build_student, student_arch
    from dlkdd.train.checkpoint import save_checkpoint

    n = len(classes)
    torch.manual_seed(0)
    student = build_student(cfg, n).eval()
    ckpt = {"kind": "student", "arch": student_arch(cfg, n), "config": cfg.to_dict(), "classes": list(classes)}
    return student, ckpt, save_checkpoint(path, model=student.state_dict(), **ckpt)


def bench_backbones(cfg: Any, classes: Sequence[str], work_dir: str | Path, backbones: Sequence[Sequence[str]],
                    repeats: int = 5, int8_calib_clips: int = 16) -> dict[str, Any]:
    """See the module doc: each of ``backbones`` at ``cfg``'s clip shape, eager and ONNX Runtime, round-robin."""
    from dlkdd.bench.presets import shape_config
    from dlkdd.deploy.export import export_model
    from dlkdd.deploy.spec import MissingExtraError
    from dlkdd.models.backbones import backbone_spec
    from dlkdd.models.profile import count_flops

    work = Path(work_dir) / "backbones"
    work.mkdir(parents=True, exist_ok=True)
    shape = (1, 3, cfg.clip.frames, cfg.clip.size, cfg.clip.size)
    threads = torch.get_num_threads()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    rows, runners, eager = [], {}, {}
    for label, backbone, head in backbones:
        c = shape_config(cfg, backbone, cfg.clip.frames, cfg.clip.size, head)
        student, ckpt, path = _student_checkpoint(c, classes, work / f"{backbone}.pt")
        row: dict[str, Any] = {"label": label, "backbone": backbone, "head": head,
                               "params": sum(p.numel() for p in student.parameters()),
                               "gmacs": count_flops(student, x) / 2e9, "onnx_status": "ok",
                               "int8_status": "no recipe", "int8_check": None}
        rows.append(row)
        eager[label] = runners[f"{label} eager"] = student
        log.info("backbones bench: %s exported to ONNX", label)
        try:
            export_model(student, ckpt, work / f"{backbone}.onnx", "onnx", source=path, check=False)
            runners[f"{label} onnx"] = _load(work / f"{backbone}.onnx", threads)
        except MissingExtraError:
            row["onnx_status"] = row["int8_status"] = "not installed (pip install 'dlkdd[export]')"
            continue
        if backbone_spec(backbone).int8_fp32_modules is not None:
            row.update(_static_int8_row(student, ckpt, work / f"{backbone}.onnx", work / f"{backbone}-int8.onnx",
                                        int8_calib_clips, path))
            if row["int8_status"] == "ok":
                runners[f"{label} int8"] = _load(work / f"{backbone}-int8.onnx", threads)
    times = _time_round_robin(runners, x, repeats)
    with torch.inference_mode():
        for row in rows:
            row["eager_ms"] = times[f"{row['label']} eager"]
            onnx = runners.get(f"{row['label']} onnx")
            row["onnx_ms"] = times.get(f"{row['label']} onnx")
            row["int8_ms"] = times.get(f"{row['label']} int8")
            row["max_abs_diff"] = float((onnx(x) - eager[row["label"]](x)).abs().max()) if onnx else None
    return {"input_shape": list(shape), "threads": threads, "repeats": repeats, "rows": rows}


def _static_int8_row(student: Any, ckpt: dict[str, Any], src: Path, dst: Path, calib_clips: int,
                     source: Path) -> dict[str, Any]:
    """``{"int8_status", "int8_check"}`` of the static int8 copy of ``src`` (an error is a status, not a stop)."""
    from dlkdd.deploy.export import static_int8_copy
    from dlkdd.errors import DlkddError

    try:
        spec = static_int8_copy(student, ckpt, src, dst, calib_clips, source=source)
    except DlkddError as e:
        log.warning("backbones bench: no static int8 for %s: %s", source.stem, e)
        return {"int8_status": str(e).splitlines()[0][:200], "int8_check": None}
    return {"int8_status": "ok", "int8_check": spec["int8"]["check"]}


def backbones_table(res: dict[str, Any], paper: dict[str, Any] | None = None) -> list[str]:
    """Markdown lines of :func:`bench_backbones`' table; ``paper``: a ``by_shape`` profile of the paper's student
    (its GMACs ratio to each row)."""
    shape = "x".join(str(v) for v in res["input_shape"])
    first = res["rows"][0]
    L = ["", f"#### Backbones side by side: batch {shape}, CPU, {res['threads']} thread(s)", "",
         f"Median of {res['repeats']} round-robin calls each (every model and format in turn, after two warm-ups); "
         f"'x' columns: this row / {first['label']}.", "",
         "| student | params (M) | GMACs | eager (ms) | ONNX Runtime fp32 (ms) | ORT static int8 (ms) | "
         "int8 speed-up | GMACs x | eager x | ORT x | max abs logit diff |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        ort = f"{r['onnx_ms']:,.1f}" if r["onnx_ms"] is not None else r["onnx_status"]
        ort_x = f"{r['onnx_ms'] / first['onnx_ms']:.1f}x" if r["onnx_ms"] and first["onnx_ms"] else "-"
        diff = f"{r['max_abs_diff']:.1e}" if r["max_abs_diff"] is not None else "-"
        q_ms = r.get("int8_ms")
        q = f"{q_ms:,.1f}" if q_ms is not None else r.get("int8_status", "-")
        q_x = f"{r['onnx_ms'] / q_ms:.2f}x" if q_ms and r["onnx_ms"] else "-"
        L.append(f"| {r['label']} | {r['params'] / 1e6:.2f} | {r['gmacs']:.2f} | {r['eager_ms']:,.1f} | {ort} | {q} | "
                 f"{q_x} | {r['gmacs'] / first['gmacs']:.1f}x | {r['eager_ms'] / first['eager_ms']:.1f}x | {ort_x} | "
                 f"{diff} |")
    checks = [(r["label"], r["int8_check"]) for r in res["rows"] if r.get("int8_check")]
    if checks:
        each = "; ".join(f"{label} top-1 agreement {100 * c['top1_agreement']:.0f}% of {c['n']}, relative logit error "
                         f"{c['rel_logit_error']:.3f}" for label, c in checks)
        L += ["", "Static int8 (`dlkdd export --int8 static`: QDQ, calibrated on centred training clips, the backbone "
              f"table's early modules in fp32) vs fp32 on held training clips (the bench's untrained weights): {each}. "
              "int8 speed-up: fp32 ms / int8 ms, same round-robin run."]
    if paper:
        s, at = paper["student"], "x".join(map(str, res["input_shape"][1:]))
        L += ["", f"{paper['label']} at {'x'.join(str(v) for v in paper['input_shape'][1:])}: {s['gmacs']:.1f} GMACs, "
              f"{s['gmacs'] / first['gmacs']:.0f}x the GMACs of {first['label']} at {at}."]
    return L


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
