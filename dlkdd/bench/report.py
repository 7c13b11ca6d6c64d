"""The benchmark's Markdown report (goes into BENCHMARKS.md): one table per part.

``markdown_report(result: dict) -> str``; ``result`` is what :func:`dlkdd.bench.run_bench` returns.
Absolute times are captioned with the machine; ratios are measured within one run.
"""
from __future__ import annotations

from typing import Any

__all__ = ["markdown_report"]


def _f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != x:
            return "-"
        return f"{x:,.{nd}f}"
    return str(x)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(c if isinstance(c, str) else _f(c) for c in r) + " |" for r in rows]
    return out


def _kd(kd: dict[str, Any]) -> list[str]:
    shape = "x".join(str(s) for s in kd["input_shape"])
    L = [f"### Cached vs online distillation (student step, batch {shape})", "",
         f"Median of {kd['steps']} round-robin steps after {kd['warmup']} warm-up, same batches; teacher = "
         f"{kd['teacher_enhancer']} + the same R(2+1)D-BERT.", ""]
    L += _table(["variant", "s / step", "clips/s", "peak memory (MB)"], [
        ["student step, soft targets in memory", kd["student_s_per_step"], kd["batch"] / kd["student_s_per_step"], None],
        ["teacher forward alone", kd["teacher_forward_s"], kd["batch"] / kd["teacher_forward_s"], None],
        ["**cached** (targets read from the LogitStore)", kd["cached_s_per_step"], kd["cached_clips_per_s"],
         kd["cached_peak_mem_mb"]],
        ["**online** (teacher run per step)", kd["online_s_per_step"], kd["online_clips_per_s"],
         kd["online_peak_mem_mb"]],
    ])
    e = kd.get("e2e") or {}
    L += ["", _table(["ratio", "value"], [])[0], "|---|---|",
          f"| speed-up online / cached | **{_f(kd['speedup'])}x** |",
          f"| ideal speed-up (student + teacher fwd) / student | {_f(kd['ideal_speedup'])}x |",
          f"| efficiency (speed-up / ideal; target >= 0.90) | {_f(kd['efficiency'])} "
          f"({'within' if kd['within_10pct_of_ideal'] else 'NOT within'} 10%) |",
          f"| cache read overhead on the student step | {_f(100 * kd['cache_read_overhead'], 1)}% |",
          f"| peak memory online / cached | {_f(kd['mem_ratio'])}x |"]
    if e:
        L += [f"| end to end (DataLoader, {e['workers']} workers): online / cached | {_f(e['speedup'])}x "
              f"({_f(e['online_s_per_step'])} vs {_f(e['cached_s_per_step'])} s/step) |",
              f"| end to end: share of the cached step spent waiting for data | "
              f"{_f(100 * e['data_wait_fraction'], 1)}% |"]
    L += ["", f"Peak memory: {kd['mem_method']}."]
    return L


def _inference(inf: dict[str, Any]) -> list[str]:
    L = ["### Inference cost (batch 1; cf. the paper's Table 5)", "",
         "GFLOPs = torch FlopCounterMode (2 FLOPs per multiply-accumulate); GMACs = GFLOPs / 2. "
         "The paper's \"GFLOPs\" look like MACs: compare them with the GMACs column. Memory: "
         + ("CUDA max allocated." if "cuda" in str(inf.get("device", "")) else
            "on CPU, profile_model's estimate of peak live activations (weights excluded); the paper's is GPU memory.")
         , ""]
    rows = []
    for s in inf["by_shape"]:
        shape = "x".join(str(v) for v in s["input_shape"][1:])
        for name, title in (("student", "student (dark clip)"), ("enhanced", "enhancement-based (ZeroDCE + classifier)"),
                            ("two_stream", "two-stream (original + gamma, shared weights)")):
            if name not in s:  # a preset profiling the student only (light)
                continue
            r = s[name]
            rows.append([f"{s['label']} {shape}", title, f"{r['params'] / 1e6:.2f} M", r["gflops"], r["gmacs"],
                         r["peak_mem_mb"], r["latency_ms"]])
    L += _table(["model / input", "inference", "params", "GFLOPs", "GMACs", "peak mem (MB)", "latency (ms)"], rows)
    p = inf["paper_table5"]
    L += ["", f"Paper ({p['source']}): student {p['student']['gflops']} GFLOPs / {p['student']['peak_mem_mb']:.0f} MB, "
          f"enhancement-based {p['enhanced']['gflops']} GFLOPs / {p['enhanced']['peak_mem_mb']:.0f} MB, "
          f"two-stream {p['two_stream']['note']} (~{p['two_stream']['gflops']:.0f})."]
    for s in [s for s in inf["by_shape"] if "enhanced" in s and "two_stream" in s]:
        L.append(f"- {s['label']}: enhanced / student = {_f(s['enhanced']['gflops_vs_student'], 3)}x FLOPs, "
                 f"{_f(s['enhanced']['latency_vs_student'])}x latency; two-stream / student = "
                 f"{_f(s['two_stream']['gflops_vs_student'], 3)}x FLOPs, {_f(s['two_stream']['latency_vs_student'])}x latency.")
    if inf.get("deploy"):
        from dlkdd.bench.deploy import deploy_table

        L += deploy_table(inf["deploy"])
    if inf.get("backbones"):
        from dlkdd.bench.deploy import backbones_table

        paper = [s for s in inf["by_shape"] if s["label"].startswith("paper")]
        L += backbones_table(inf["backbones"], paper[0] if paper else None)
    return L


def _data(d: dict[str, Any]) -> list[str]:
    L = ["### Data path", ""]
    L += _table(["decode + crop + resize (main process)", "ms / clip", "clips/s"],
                [[f"{r['frames']} frames, stride {r['stride']}, {r['size']}px", r["ms_per_clip"], r["clips_per_s"]]
                 for r in d["decode"]])
    L += [""]
    L += _table(["DataLoader over ClipDataset", "clips/s", "ms / clip"],
                [[f"{r['workers']} worker(s) ({r['frames']} frames)", r["clips_per_s"], r["ms_per_clip"]]
                 for r in d["loader"]])
    L += ["", f"Student training step alone: {_f(d['train_step_clips_per_s'])} clips/s "
          f"({d.get('train_step_source', 'measured')}). Loader with train.workers="
          f"{d['train_workers']}: {_f(d['loader_clips_per_s_at_train_workers'])} clips/s "
          f"({_f(d['loader_over_step'])}x the step). Training waits for data: **{_f(d['waits_for_data'])}**"
          + (f"; measured end to end, {_f(100 * d['e2e_data_wait_fraction'], 1)}% of the cached step is data wait."
             if d.get("e2e_data_wait_fraction") is not None else ".")]
    if d.get("fix"):
        L += ["", d["fix"]]
    return L


def _precompute(p: dict[str, Any]) -> list[str]:
    L = [f"### Teacher precompute (`dlkdd cache-logits`; teacher {p['teacher']}, clips "
         f"{'x'.join(map(str, p['clip']))}, {p['workers']} loader workers, {p['dtype']} {p['format']})", ""]
    L += _table(["K views", "clips", "clips/s", "views/s", "s (incl. scan)", "store KB / clip"],
                [[r["views"], r["clips"], r["clips_per_s"], r["views_per_s"], r["seconds"], r["store_kb_per_clip"]]
                 for r in p["by_views"]])
    L += ["", "clips/s and views/s are net of the bad-clip scan the command runs first (timed separately)."]
    return L


def _epoch(e: dict[str, Any]) -> list[str]:
    shape = "x".join(str(s) for s in e["input_shape"])
    L = [f"### A student epoch: data wait and decode vs batches in memory (batch {shape}, {e['amp']})", "",
         f"{e['steps']} steps per variant, median of {e['rounds']} round-robin round(s), {e['threads']} torch "
         "thread(s) in the main process. decode: the student decodes its view from the video; stored: it reads "
         "the uint8 view kept beside the logits (cache.clips). load CPU share: CPU time of producing the clips / "
         "epoch wall time.", ""]
    L += _table(["variant", "workers", "amp", "s / step", "clips/s", "rate vs memory", "(best rounds)", "data wait",
                 "load CPU share", "load ms / clip"],
                [[r["kind"], r["workers"], r["amp"], r["s_per_step"], r["clips_per_s"], r["rate_vs_memory"],
                  r.get("rate_vs_memory_best"),
                  f"{100 * r['data_wait_share']:.1f}%", f"{100 * r['load_cpu_share']:.1f}%", r["load_ms_per_clip"]]
                 for r in e["variants"]])
    if e.get("fp32_over_bf16_step"):
        L += ["", f"Step time fp32 / bf16 (in memory): **{_f(e['fp32_over_bf16_step'])}x**."]
    d, s = e["decode"], e["stored"]
    L += ["", f"At train.workers={d['workers']}: decoding runs at {_f(d['rate_vs_memory'])} of the in-memory rate "
          f"({100 * d['data_wait_share']:.1f}% data wait; best rounds {_f(d.get('rate_vs_memory_best'))}), stored "
          f"clips at **{_f(s['rate_vs_memory'])}** ({100 * s['data_wait_share']:.1f}% data wait; best rounds "
          f"{_f(s.get('rate_vs_memory_best'))}): target >= 0.90 "
          f"{'met' if e['meets_90pct'] else 'NOT met'}."]
    return L


def markdown_report(result: dict[str, Any]) -> str:
    from dlkdd.bench.machine import machine_label

    m = result["machine"]
    L = [f"## `dlkdd bench --preset {result['preset']}`", "",
         f"Machine: {machine_label(m)}. Data: {result['dataset']}. "
         f"Absolute times hold for this machine only; the ratios were measured in one run.", ""]
    if not m.get("gpu"):
        L += ["No GPU was available: every figure below is a CPU figure.", ""]
    from dlkdd.bench.pose import pose_table

    for key, fn in (("kd_step", _kd), ("inference", _inference), ("data", _data), ("precompute", _precompute),
                    ("epoch", _epoch), ("pose", pose_table)):
        if result.get(key):
            L += fn(result[key]) + [""]
    L.append(f"Total benchmark time: {result['seconds']:.0f} s.")
    return "\n".join(L) + "\n"
