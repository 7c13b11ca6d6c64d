"""``dlkdd bench --parts epoch``: a student epoch through the loader (decoding vs stored clips)
against the same steps in memory, on the tiny preset."""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner


def test_bench_epoch_part_reports_wait_decode_and_rates(tmp_path, monkeypatch):
    from dlkdd.cli import main

    monkeypatch.setenv("DLKDD_CPU_BF16", "1")  # amp=auto resolves to bf16: the memory variant runs in both
    out = tmp_path / "b.json"
    r = CliRunner().invoke(main, ["--device", "cpu", "bench", "--preset", "tiny", "--parts", "epoch", "--threads", "1",
                                  "--json", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    e = json.loads(out.read_text())["epoch"]
    by = {v["variant"]: v for v in e["variants"]}
    assert set(by) == {"memory/fp32", "memory/bf16", "decode/0", "decode/1", "stored/0", "stored/1"}
    assert e["amp"] == "bf16" and by["memory/bf16"]["rate_vs_memory"] == pytest.approx(1.0)
    assert by["memory/bf16"]["rate_vs_memory_best"] == pytest.approx(1.0)
    assert by["memory/fp32"]["rate_vs_memory"] is None  # fp32 is only timed for the fp32 / bf16 ratio
    for v in e["variants"]:
        assert v["s_per_step"] > 0 and 0 <= v["data_wait_share"] < 1
    # in the main process (0 workers) the whole load is waited for: the wait share is the load's time
    assert by["decode/0"]["data_wait_share"] > 0
    # both load costs are measured (which is cheaper is the benchmark's finding, recorded in BENCHMARKS.md,
    # not asserted: a timing comparison fails when the other test worker loads the CPU)
    assert set(e["load_ms_per_clip"]) == {"stored", "decode"}
    assert all(math.isfinite(v) and v > 0 for v in e["load_ms_per_clip"].values())
    assert math.isfinite(e["fp32_over_bf16_step"]) and e["fp32_over_bf16_step"] > 0
    assert isinstance(e["meets_90pct"], bool)
    md = out.with_suffix(".md").read_text()
    assert "A student epoch" in md and "Step time fp32 / bf16" in md
