"""What the benchmark ran on: CPU model and cores, threads, GPU, torch/python versions.

``machine_info(device) -> dict`` with ``cpu`` (model name from ``/proc/cpuinfo``), ``cpu_count``
(logical CPUs of the machine), ``cpus_usable`` (this process's affinity), ``torch_threads``,
``torch``, ``python``, ``platform``, ``device`` and, on CUDA, ``gpu`` / ``gpu_mem_gb``.
``machine_label(info) -> str``: one line for table captions (absolute times carry it).
"""
from __future__ import annotations

import os
import platform
from typing import Any

__all__ = ["machine_info", "machine_label", "cpu_model"]


def cpu_model() -> str:
    """The ``model name`` line of ``/proc/cpuinfo`` (else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info(device: Any = "cpu") -> dict[str, Any]:
    import torch

    dev = torch.device(device)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(dev),
        "gpu": None,
    }
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info["gpu"] = p.name
        info["gpu_mem_gb"] = round(p.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def machine_label(info: dict[str, Any]) -> str:
    if info.get("gpu"):
        hw = f"GPU {info['gpu']} ({info.get('gpu_mem_gb', '?')} GB), CUDA {info.get('cuda')}"
    else:
        hw = f"CPU {info['cpu']}, {info['cpus_usable']} usable cores, {info['torch_threads']} torch threads, no GPU"
    return f"{hw}; torch {info['torch']}, python {info['python']}"
