#!/usr/bin/env python
"""The GPU check of issue 14: speed and memory of DL-KDD at the paper's shape, in one JSON.

Runs, on a CUDA machine (``make gpu-check``):

1. ``dlkdd bench --preset paper`` (R(2+1)D-34 + BERT, 3x64x112x112, batch 8, bf16): cached vs
   online KD step, inference cost, data path, teacher precompute, a student epoch (decoding vs
   stored clips vs batches in memory);
2. the pipeline on a synthetic dark set at the paper's clip shape: a one-epoch teacher ->
   ``cache-logits`` -> a one-epoch student, each through the real CLI;
3. the same student under ``torchrun --standalone --nproc_per_node=1``;

and writes ``--out`` (JSON, rewritten after every stage, so a timeout keeps what finished):
``summary`` (step times, clips/s, data-wait share, peak GPU memory, cached/online ratio),
``env``, ``bench`` (the full ``dlkdd bench`` result), ``pipeline``, ``torchrun``, ``errors``.

The GPU host has torch, torchvision and h5py but no PyAV and no Zarr, and no package registry:
``make gpu-wheels`` downloads them (and click, PyYAML, tqdm) into ``gpu-wheels/`` on a CPU
machine; this script installs the ones missing here from there into ``--work``/site (pip
``--no-index``). Without a usable PyAV it falls back to a synthetic-tensor measurement of the
student and online steps (no decoding, no pipeline); without Zarr the pipeline's store is HDF5
without stored clips.

CPU test of every code path: ``python scripts/gpu_check.py --device cpu --tiny`` (tests/test_gpu_check.py),
``--no-video`` for the fallback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# import name -> distribution name; what dlkdd needs beyond torch, numpy and h5py
NEEDED = {"av": "av", "zarr": "zarr", "numcodecs": "numcodecs", "donfig": "donfig", "google_crc32c": "google-crc32c",
          "click": "click", "yaml": "PyYAML", "tqdm": "tqdm", "packaging": "packaging",
          "typing_extensions": "typing_extensions"}


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:
        return False
    return True


def _unzip_wheel(wheels: Path, dist: str, site: Path) -> bool:
    """Without pip: unpack the first wheel of ``dist`` whose tag fits this python into ``site``."""
    import zipfile

    name = dist.lower().replace("-", "_")
    cp = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for w in sorted(wheels.glob("*.whl")):
        parts = w.name[:-4].split("-")
        if parts[0].lower() != name or len(parts) < 5:
            continue
        py, abi = parts[-3], parts[-2]
        if py.startswith("py3") or py == cp or (abi == "abi3" and int(py[3:] or 0) <= sys.version_info.minor):
            with zipfile.ZipFile(w) as z:
                z.extractall(site)
            return True
    return False


def ensure_packages(wheels: Path, site: Path, skip: tuple[str, ...] = (),
                    needed: dict[str, str] | None = None) -> dict[str, Any]:
    """Install the missing packages of ``needed`` (import name -> distribution; default
    :data:`NEEDED`) from the wheels in ``wheels`` into ``site``, put first on ``sys.path`` and
    ``PYTHONPATH`` (pip ``--no-index``; unzipping when this python has no pip). ``skip``: import
    names to treat as unavailable. Returns what was missing, installed and is now available."""
    needed = NEEDED if needed is None else needed
    missing = [m for m in needed if m not in skip and not _importable(m)]
    out: dict[str, Any] = {"missing_before": missing, "installed": [], "wheels": str(wheels)}
    if missing and wheels.is_dir():
        site.mkdir(parents=True, exist_ok=True)
        has_pip = _importable("pip")
        for mod in missing:  # one at a time: a wheel absent for this python must not block the others
            dist = needed[mod]
            if has_pip:
                r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links",
                                    str(wheels), "--target", str(site), "--quiet", dist],
                                   capture_output=True, text=True)
                ok, err = r.returncode == 0, (r.stderr.strip().splitlines() or ["?"])[-1]
            else:
                ok, err = _unzip_wheel(wheels, dist, site), "no wheel for this python"
            if ok:
                out["installed"].append(dist)
            else:
                out.setdefault("install_errors", {})[dist] = err
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        importlib.invalidate_caches()
    out["available"] = {m: (m not in skip and _importable(m)) for m in needed}
    return out


def env_info(device: str) -> dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "cuda": torch.version.cuda, "cpu_count": os.cpu_count(), "host": platform.node()}
    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_mem_gb=round(p.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count())
    return info


def _peak_gpu_mb(device: str) -> float | None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def stage_bench(preset: str, device: str, work: Path, parts: str | None = None) -> dict[str, Any]:
    """``dlkdd bench --preset PRESET [--parts PARTS]`` (all parts by default on CUDA); stores kept in ``work``."""
    from dlkdd.bench import run_bench

    return run_bench(preset, parts or None, device, None, (), work / "bench", None, None)


def stage_tensor_steps(preset: str, device: str, steps: int = 3) -> dict[str, Any]:
    """Without PyAV: the student step (soft targets in memory) and the online step (teacher forward +
    student step) on random clips of the preset's shape; median s/step and peak GPU memory."""
    import statistics

    import torch

    from dlkdd.bench.kd_step import StudentStep
    from dlkdd.bench.models import bench_teacher
    from dlkdd.bench.presets import PRESETS
    from dlkdd.config import config_from_dict
    from dlkdd.train.engine import prepare_model

    p = PRESETS[preset]
    cfg = config_from_dict({"clip": {"frames": p.frames, "size": p.size, "resize": p.resize, "stride": p.stride},
                            "model": {"backbone": p.backbone, "head": "bert", "normalize": "kinetics",
                                      "pretrained": ""},
                            "enhancer": {"kind": "gamma"}, "train": {"batch_size": p.batch}})
    dev = torch.device(device)
    C, B = 11, p.batch
    step = StudentStep(cfg, C, dev)
    teacher = prepare_model(bench_teacher(cfg, C)[0], dev).eval()
    teacher_calls = [0]
    teacher.register_forward_hook(lambda *_: teacher_calls.__setitem__(0, teacher_calls[0] + 1))
    video = torch.rand(B, 3, p.frames, p.size, p.size, device=dev)
    batch = {"video": video, "label": torch.randint(0, C, (B,), device=dev),
             "teacher_logits": torch.randn(B, C, device=dev)}

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def online():
        with torch.no_grad(), step.autocast():
            tl = teacher(video).float()
        step({**batch, "teacher_logits": tl})

    times: dict[str, list[float]] = {"cached": [], "online": []}
    for i in range(steps + 1):
        for name, fn in (("cached", lambda: step(batch)), ("online", online)):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if i:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"shape": [B, 3, p.frames, p.size, p.size], "amp": "bf16" if step.dtype is not None else "fp32",
            "cached_s_per_step": med["cached"], "online_s_per_step": med["online"],
            "cached_clips_per_s": B / med["cached"], "online_clips_per_s": B / med["online"],
            "online_over_cached": med["online"] / med["cached"], "peak_gpu_mb": _peak_gpu_mb(device),
            "steps": steps, "teacher_forwards": teacher_calls[0], "times_s": times}


def _cli(args: list[str], device: str, torchrun: bool = False, timeout: float = 900) -> dict[str, Any]:
    if torchrun:
        runner = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
        cmd = [runner, "--standalone", "--nproc_per_node=1", "-m", "dlkdd", "--device", device, *args]
    else:
        cmd = [sys.executable, "-m", "dlkdd", "--device", device, *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t0 = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    out = {"cmd": " ".join(map(str, cmd[:8])) + " ...", "seconds": time.perf_counter() - t0, "rc": r.returncode}
    if r.returncode != 0:
        out["stderr_tail"] = r.stderr[-2000:]
    return out


def _train_metrics(run_dir: Path) -> dict[str, Any]:
    f = run_dir / "metrics.json"
    if not f.is_file():
        return {}
    m = json.loads(f.read_text())
    t = m.get("train") or {}
    return {"amp": m.get("amp"), "train_clips_per_s": t.get("clips_per_s"), "train_epoch_s": t.get("seconds"),
            "train_loss": t.get("loss"), "top1": m.get("top1")}


def random_zerodce(path: Path) -> Path:
    """A randomly initialised DCE-Net in the official state-dict layout: the paper's teacher cost
    without the official weights (not on the GPU host; costs do not depend on weight values)."""
    import torch

    from dlkdd.models.zerodce import ZeroDCE

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(ZeroDCE().state_dict(), path)
    return path


def pipeline_config(work: Path, tiny: bool, have_zarr: bool) -> Path:
    """A synthetic dark set at the paper's clip shape (or a tiny one) and the config that trains on it."""
    import yaml

    from dlkdd.data.synth import make_synthetic

    if tiny:
        paths = make_synthetic(work / "data", classes=2, clips_per_class=3, frames=12, size=(32, 48), seed=0)
        model = {"backbone": "r2plus1d_tiny", "head": "avg", "normalize": "dataset", "pretrained": ""}
        clip = {"frames": 4, "stride": 2, "size": 32, "resize": 40}
        train = {"batch_size": 2, "workers": 0}
        enhancer = {"kind": "gamma"}
    else:  # the paper's student: R(2+1)D-34 (IG65M layout, random init) + BERT on 64x112x112, batch 8
        paths = make_synthetic(work / "data", classes=4, clips_per_class=9, frames=72, size=(128, 170), seed=0)
        model = {"backbone": "r2plus1d_34_ig65m", "head": "bert", "normalize": "kinetics", "pretrained": ""}
        clip = {"frames": 64, "stride": 1, "size": 112, "resize": 128}
        train = {"batch_size": 8, "workers": min(8, max(1, (os.cpu_count() or 2) // 2))}
        enhancer = {"kind": "zerodce", "weights": str(random_zerodce(work / "zerodce-random.pth"))}
    cfg = {"name": "gpu-check", "seed": 0,
           "data": {"format": "arid", "root": paths["root"], "train_list": paths["train_list"],
                    "test_list": paths["test_list"], "mapping": paths["mapping"]},
           "clip": clip, "model": model, "enhancer": enhancer,
           "train": dict(train, epochs=1, lr=1e-4, amp="auto", eval_every=1),
           "cache": {"views": 2, "format": "zarr" if have_zarr else "hdf5", "dir": str(work / "cache"),
                     "clips": bool(have_zarr)}}
    out = work / "config.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def stage_pipeline(work: Path, device: str, tiny: bool, have_zarr: bool) -> dict[str, Any]:
    cfg = pipeline_config(work, tiny, have_zarr)
    store = work / ("cache.zarr" if have_zarr else "cache.h5")
    res: dict[str, Any] = {"config": str(cfg), "store": store.suffix, "stored_clips": bool(have_zarr)}
    steps = [("teacher", ["teacher", "--config", cfg, "--out", work / "teacher", "--no-progress"]),
             ("cache_logits", ["cache-logits", "--config", cfg, "--teacher", work / "teacher" / "teacher.pt",
                               "--out", store, "--no-progress"]),
             ("student", ["student", "--config", cfg, "--cache", store, "--out", work / "student", "--no-progress"])]
    for name, args in steps:
        r = _cli(args, device)
        if name in ("teacher", "student"):
            r.update(_train_metrics(work / name))
        res[name] = r
        if r["rc"] != 0:
            break
    return res


def stage_torchrun(work: Path, device: str, have_zarr: bool) -> dict[str, Any]:
    store = work / ("cache.zarr" if have_zarr else "cache.h5")
    r = _cli(["student", "--config", work / "config.yaml", "--cache", store, "--out", work / "student-torchrun",
              "--no-progress"], device, torchrun=True)
    r.update(_train_metrics(work / "student-torchrun"))
    return r


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, from whichever stages ran."""
    s: dict[str, Any] = {}
    b = res.get("bench") or {}
    kd = b.get("kd_step") or {}
    if kd:
        s["step_s"] = {"student_in_memory": kd.get("student_s_per_step"), "cached": kd.get("cached_s_per_step"),
                       "online": kd.get("online_s_per_step"), "teacher_forward": kd.get("teacher_forward_s")}
        s["clips_per_s"] = {"cached": kd.get("cached_clips_per_s"), "online": kd.get("online_clips_per_s")}
        s["cached_over_online_speed"] = kd.get("speedup")
        s["peak_mem_mb"] = {"cached": kd.get("cached_peak_mem_mb"), "online": kd.get("online_peak_mem_mb"),
                            "method": kd.get("mem_method")}
        s["data_wait_share_e2e"] = (kd.get("e2e") or {}).get("data_wait_fraction")
    ep = b.get("epoch") or {}
    if ep:
        s["epoch"] = {k: ep.get(k) for k in ("decode", "stored", "fp32_over_bf16_step", "meets_90pct", "amp")}
    ts = res.get("tensor_steps") or {}
    if ts:
        s["tensor_steps"] = {k: ts.get(k) for k in ("cached_s_per_step", "online_s_per_step", "online_over_cached",
                                                    "peak_gpu_mb", "amp", "teacher_forwards")}
    for k in ("pipeline", "torchrun"):
        if res.get(k):
            s[k] = res[k]
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny preset and data (the CPU test of every code path)")
    ap.add_argument("--out", default="gpu-check/gpu_check.json")
    ap.add_argument("--work", default=None, help="scratch folder (default: beside --out)")
    ap.add_argument("--wheels", default=str(REPO / "gpu-wheels"), help="folder of wheels (make gpu-wheels)")
    ap.add_argument("--no-video", action="store_true", help="act as if PyAV were missing (the fallback path)")
    ap.add_argument("--skip", default="", help="comma list of stages to skip: bench,pipeline,torchrun")
    ap.add_argument("--bench-parts", default="", help="dlkdd bench --parts (default: all on CUDA)")
    a = ap.parse_args(argv)

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) if a.work else out.parent / "work"
    work.mkdir(parents=True, exist_ok=True)
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    res: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "errors": {}}
    res["packages"] = ensure_packages(Path(a.wheels), work / "site", skip=("av",) if a.no_video else ())
    sys.path.insert(0, str(REPO))
    if a.no_video:
        sys.modules["av"] = None  # type: ignore[assignment]  # import av now raises ImportError
    have_av = res["packages"]["available"]["av"]
    have_zarr = res["packages"]["available"]["zarr"]
    res["env"] = env_info(a.device)
    preset = "tiny" if a.tiny else "paper"

    def save() -> None:
        res["summary"] = summarize(res)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=2, default=str))
        tmp.replace(out)

    def stage(name: str, fn) -> None:
        if name in skip:
            return
        t0 = time.perf_counter()
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        try:
            res[name] = fn()
        except Exception as e:  # record and go on: one failing stage must not hide the others
            res["errors"][name] = f"{type(e).__name__}: {e}"
        res.setdefault("stage_seconds", {})[name] = time.perf_counter() - t0
        save()

    save()
    if have_av and have_zarr:
        stage("bench", lambda: stage_bench(preset, a.device, work, a.bench_parts))
    else:
        res["errors"]["bench"] = ("skipped: dlkdd bench needs PyAV and Zarr (run make gpu-wheels for this python "
                                  f"{platform.python_version()}); synthetic-tensor steps measured instead")
        stage("tensor_steps", lambda: stage_tensor_steps(preset, a.device))
    if have_av:
        stage("pipeline", lambda: stage_pipeline(work / "pipeline", a.device, a.tiny, have_zarr))
        if (res.get("pipeline") or {}).get("student", {}).get("rc") == 0:
            stage("torchrun", lambda: stage_torchrun(work / "pipeline", a.device, have_zarr))
    else:
        res["errors"]["pipeline"] = "skipped: no PyAV to write and decode the synthetic videos"
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    save()
    print(json.dumps(res["summary"], indent=2, default=str))
    print(f"gpu_check: wrote {out}", file=sys.stderr)
    return 0 if not {k for k, v in res["errors"].items() if not str(v).startswith("skipped")} else 1


if __name__ == "__main__":
    sys.exit(main())
