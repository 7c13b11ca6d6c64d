"""``dlkdd bench`` keeps working: the tiny preset end to end, and its report's pieces.

Not a timed test: it checks the command runs and writes a complete, consistent JSON and
Markdown report (values finite, ratios computed from the medians they claim to come from).
"""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from dlkdd.bench import resolve_parts
from dlkdd.bench.machine import machine_label
from dlkdd.bench.presets import PRESETS


def test_resolve_parts():
    assert resolve_parts("data,kd", PRESETS["mini"], cuda=False) == ["kd", "data"]
    assert resolve_parts(None, PRESETS["paper"], cuda=False) == ["inference", "data"]
    assert resolve_parts(None, PRESETS["paper"], cuda=True) == ["kd", "inference", "data", "precompute", "epoch"]
    with pytest.raises(ValueError, match="unknown benchmark part"):
        resolve_parts("kd,speed", PRESETS["mini"], cuda=False)


def test_bad_part_is_a_usage_error(tmp_path):
    from dlkdd.cli import main

    r = CliRunner().invoke(main, ["bench", "--preset", "tiny", "--parts", "nope", "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 2 and "unknown benchmark part" in r.output
    assert not (tmp_path / "b.json").exists()


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_tiny_end_to_end(tmp_path):
    from dlkdd.cli import main

    out = tmp_path / "bench" / "bench.json"
    r = CliRunner().invoke(main, ["--device", "cpu", "bench", "--preset", "tiny", "--steps", "1",
                                  "--set", "train.workers=0", "--threads", "1", "--json", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    md = out.with_suffix(".md").read_text()

    kd = res["kd_step"]
    for k in ("cached_s_per_step", "online_s_per_step", "speedup", "ideal_speedup", "cached_peak_mem_mb",
              "online_peak_mem_mb", "student_s_per_step", "teacher_forward_s"):
        assert _finite(kd[k]), (k, kd[k])
    assert kd["speedup"] == pytest.approx(kd["online_s_per_step"] / kd["cached_s_per_step"])
    assert kd["ideal_speedup"] == pytest.approx((kd["student_s_per_step"] + kd["teacher_forward_s"])
                                                / kd["student_s_per_step"])
    assert kd["ideal_speedup"] > 1.0
    assert kd["input_shape"] == [2, 3, 4, 32, 32]
    assert _finite(kd["e2e"]["cached_s_per_step"]) and _finite(kd["e2e"]["online_s_per_step"])
    # the cached variant never loads the teacher: its process cannot need more memory than the online one's
    # beyond noise; both include python + torch
    assert kd["online_peak_mem_mb"] > kd["mem_probes"]["online"]["base_rss_mb"]

    inf = res["inference"]
    for name in ("student", "enhanced", "two_stream"):
        for k in ("params", "gflops", "gmacs", "peak_mem_mb", "latency_ms"):
            assert _finite(inf[name][k]), (name, k)
        assert inf[name]["gmacs"] == pytest.approx(inf[name]["gflops"] / 2)
    # shared classifier: the enhancer adds parameters and FLOPs, two-stream exactly doubles the FLOPs
    assert inf["enhanced"]["params"] > inf["student"]["params"] == inf["two_stream"]["params"]
    assert inf["enhanced"]["gflops"] > inf["student"]["gflops"]
    assert inf["two_stream"]["gflops"] == pytest.approx(2 * inf["student"]["gflops"], rel=1e-3)

    # the exported student beside torch eager, measured in the same run (dlkdd/bench/deploy.py)
    dep = inf["deploy"]
    rows = {r["format"]: r for r in dep["rows"]}
    assert list(rows)[0] == "torch eager (checkpoint)" and dep["input_shape"] == [1, 3, 4, 32, 32]
    for row in rows.values():
        if row["status"] == "ok":
            assert _finite(row["latency_ms"]) and row["bytes"] > 1e6 and row["vs_eager"] > 0, row
            assert row["max_abs_diff"] <= (0.1 if "int8" in row["format"] else 1e-4), row
            assert row["format"] in md
    assert rows["TorchScript (torch.jit)"]["status"] == "ok"
    assert "Deployed formats" in md

    data = res["data"]
    assert [d["frames"] for d in data["decode"]] == list(PRESETS["tiny"].decode_frames)
    assert [d["workers"] for d in data["loader"]] == list(PRESETS["tiny"].loader_workers)
    assert isinstance(data["waits_for_data"], bool) and _finite(data["train_step_clips_per_s"])

    pre = res["precompute"]["by_views"]
    assert [p["views"] for p in pre] == list(PRESETS["tiny"].precompute_views)
    assert all(_finite(p["clips_per_s"]) and p["store_bytes"] > 0 for p in pre)

    m = res["machine"]
    assert m["torch"] and m["cpu"] and m["cpus_usable"] >= 1 and m["device"] == "cpu"
    assert machine_label(m) in md
    for title in ("Cached vs online distillation", "Inference cost", "Data path", "Teacher precompute"):
        assert title in md
    assert md in r.output  # printed too
