"""scripts/gpu_check.py on CPU: every code path of the GPU check (issue 14) with the tiny preset -
the bench, teacher -> cache-logits -> student through the CLI, the one-process torchrun student,
the synthetic-tensor fallback without PyAV, and installing missing packages from a wheel folder."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(tmp_path, *args, timeout=900):
    out = tmp_path / "gc" / "gpu_check.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out),
                        "--wheels", str(tmp_path / "no-wheels"), *args], capture_output=True, text=True,
                       timeout=timeout, cwd=REPO)
    return r, (json.loads(out.read_text()) if out.is_file() else None)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_check_tiny_runs_bench_pipeline_and_torchrun(tmp_path):
    r, res = _run(tmp_path, "--bench-parts", "epoch")
    assert r.returncode == 0, r.stderr[-3000:]
    assert res["errors"] == {} and res["env"]["device"] == "cpu"
    s = res["summary"]
    assert {"decode", "stored", "fp32_over_bf16_step"} <= set(s["epoch"])
    assert 0 <= s["epoch"]["stored"]["data_wait_share"] < 1
    p = s["pipeline"]
    assert [p[k]["rc"] for k in ("teacher", "cache_logits", "student")] == [0, 0, 0]
    assert p["stored_clips"] is True and p["student"]["train_clips_per_s"] > 0
    assert p["student"]["amp"] in ("bf16", "fp32")
    t = s["torchrun"]
    assert t["rc"] == 0 and "torchrun" in t["cmd"] and t["train_clips_per_s"] > 0
    assert set(res["stage_seconds"]) == {"bench", "pipeline", "torchrun"}


@pytest.mark.timeout(600)
def test_gpu_check_without_pyav_measures_tensor_steps(tmp_path):
    r, res = _run(tmp_path, "--no-video")
    assert r.returncode == 0, r.stderr[-3000:]
    assert res["errors"]["bench"].startswith("skipped") and res["errors"]["pipeline"].startswith("skipped")
    ts = res["summary"]["tensor_steps"]
    assert ts["cached_s_per_step"] > 0 and ts["online_s_per_step"] > 0
    # the online step runs the teacher (once per step, warm-up included); the cached one never does.
    # No timing assertion: which step is faster depends on what else the machine runs.
    assert ts["teacher_forwards"] == 3 + 1
    assert [len(v) for v in res["tensor_steps"]["times_s"].values()] == [3, 3]
    assert "pipeline" not in res and "torchrun" not in res


def _fake_wheel(d: Path, name: str, tag: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    w = d / f"{name}-0.1-{tag}.whl"
    info = f"{name}-0.1.dist-info"
    with zipfile.ZipFile(w, "w") as z:
        z.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        z.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n")
        z.writestr(f"{info}/RECORD", "")
    return w


def test_missing_packages_are_installed_from_the_wheel_folder(tmp_path, monkeypatch):
    gc = _load()
    wheels = tmp_path / "wheels"
    _fake_wheel(wheels, "dlkdd_fake_present", "py3-none-any")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    res = gc.ensure_packages(wheels, tmp_path / "site", needed={"dlkdd_fake_present": "dlkdd_fake_present",
                                                                "dlkdd_fake_absent": "dlkdd_fake_absent"})
    assert res["missing_before"] == ["dlkdd_fake_present", "dlkdd_fake_absent"]
    assert res["installed"] == ["dlkdd_fake_present"]
    assert res["available"] == {"dlkdd_fake_present": True, "dlkdd_fake_absent": False}
    assert "dlkdd_fake_absent" in res["install_errors"]
    assert str(tmp_path / "site") in __import__("os").environ["PYTHONPATH"]
    # without pip: the wheel is unpacked
    assert gc._unzip_wheel(wheels, "dlkdd_fake_present", tmp_path / "site2")
    assert (tmp_path / "site2" / "dlkdd_fake_present" / "__init__.py").is_file()
    assert not gc._unzip_wheel(wheels, "dlkdd_fake_absent", tmp_path / "site3")
