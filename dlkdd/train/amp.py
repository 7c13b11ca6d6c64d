"""Mixed precision: which dtype ``train.amp`` means on this machine, and the autocast context.

``train.amp`` is ``auto | bf16 | fp32`` (DESIGN.md, "CLI"):

- ``fp32``: no autocast, on any device (bit-identical to a run without this module).
- ``bf16``: ``torch.autocast(device, dtype=torch.bfloat16)`` on any device.
- ``auto``: bf16 on CUDA; on a CPU, bf16 when the CPU computes bf16 natively
  (:func:`cpu_native_bf16`: x86 AVX512-BF16 or AMX-BF16, Arm BF16), else fp32 - emulated bf16
  is slower than fp32. Measured on an AMD EPYC with ``avx512_bf16`` (torch 2.13 CPU, R(2+1)D-18 at
  batch 4 x 3x16x56x56, one thread): a training step takes 3.38 s in fp32 and 1.86 s under bf16
  autocast (issue 14).

Autocast keeps weights, optimizer state and losses in fp32; only the autocast-listed ops
(convolutions, matmuls) run in bf16. Logits come out as bf16 and are cast to float32 by the
callers before any loss, softmax or storage.

``DLKDD_CPU_BF16=1|0`` overrides the CPU detection (tests, or a CPU that misreports its flags).
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
from typing import Iterable

import torch

log = logging.getLogger(__name__)

__all__ = ["AMP_CHOICES", "ENV_OVERRIDE", "cpu_flags", "cpu_native_bf16", "autocast_dtype", "amp_name",
           "resolve_amp", "autocast", "infer"]

AMP_CHOICES = ("auto", "bf16", "fp32")
ENV_OVERRIDE = "DLKDD_CPU_BF16"
# /proc/cpuinfo flags of native bf16 arithmetic: x86 (AVX512-BF16 dot products, AMX tiles), Arm (BF16 ext.)
_X86_BF16 = ("avx512_bf16", "amx_bf16")
_ARM_BF16 = ("bf16",)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor in ``cpuinfo`` (x86 ``flags``, Arm ``Features``);
    empty where the file is absent (macOS, Windows)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip().lower() in ("flags", "features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_native_bf16(capability: str | None = None, flags: Iterable[str] | None = None,
                    machine: str | None = None, env: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (so bf16 autocast beats fp32 there).

    ``capability``: ``torch.backends.cpu.get_cpu_capability()`` (``AVX512``, ``AVX2``, ``SVE256``,
    ...); ``flags``: :func:`cpu_flags`; ``machine``: ``platform.machine()``; ``env``: the
    ``DLKDD_CPU_BF16`` value (``1``/``0`` force the answer). Each defaults to this machine's.
    x86 needs the AVX512 kernels (torch dispatches bf16 convolutions to oneDNN there) and the
    ``avx512_bf16`` or ``amx_bf16`` flag; Arm needs the ``bf16`` feature.
    """
    env = os.environ.get(ENV_OVERRIDE, "") if env is None else env
    if env.strip() in ("0", "1"):
        return env.strip() == "1"
    machine = (platform.machine() if machine is None else machine).lower()
    flags = cpu_flags() if flags is None else frozenset(flags)
    if machine in ("aarch64", "arm64"):
        return any(f in flags for f in _ARM_BF16)
    if capability is None:
        capability = torch.backends.cpu.get_cpu_capability()
    if not str(capability).upper().startswith(("AVX512", "AMX")):
        return False
    return any(f in flags for f in _X86_BF16)


def autocast_dtype(amp: str, device: str | torch.device, native_bf16: bool | None = None) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device``: ``torch.bfloat16`` or None (fp32, no autocast).

    ``native_bf16``: whether the CPU computes bf16 natively (default :func:`cpu_native_bf16`).
    """
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be auto, bf16 or fp32, got {amp!r}")
    if amp == "fp32":
        return None
    if amp == "bf16":
        return torch.bfloat16
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16
    if kind == "cpu" and (cpu_native_bf16() if native_bf16 is None else native_bf16):
        return torch.bfloat16
    return None


def amp_name(dtype: torch.dtype | None) -> str:
    """``"bf16"`` or ``"fp32"``: what is recorded in checkpoints and ``metrics.json``."""
    return "fp32" if dtype is None else {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def resolve_amp(amp: str, device: str | torch.device, what: str = "training") -> str:
    """:func:`amp_name` of ``autocast_dtype(amp, device)``, logged once with the reason."""
    name = amp_name(autocast_dtype(amp, device))
    kind = torch.device(device).type
    if amp != "auto":
        why = f"amp={amp}"
    elif kind == "cpu":
        why = "amp=auto, CPU " + ("with" if name == "bf16" else "without") + " native bf16"
    else:
        why = f"amp=auto on {kind}"
    log.info("%s precision: %s (%s)", what, "bf16 autocast" if name == "bf16" else "fp32", why)
    return name


def autocast(dtype: torch.dtype | None, device: str | torch.device):
    """``torch.autocast`` for ``dtype`` on ``device``; a no-op context for None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def infer(model: torch.nn.Module, x: torch.Tensor, batch: int, dtype: torch.dtype | None,
          device: str | torch.device, **kwargs):
    """``model(x)`` in chunks of ``batch`` rows under autocast ``dtype``, outputs as float32.

    ``x``: ``(N, ...)`` on ``device``; returns ``(N, C)`` (or a tuple of such, when the model
    returns one). Under autocast every chunk is zero-padded to exactly ``batch`` rows, so every
    forward has one shape and the library picks the same kernels for it whatever rows share a
    chunk: a clip scored in a resumed run gets the logits of an uninterrupted one (one bf16
    rounding flip would show in float16 storage). A safeguard: on the CPU of issue 14 unpadded
    chunks gave equal rows too (tests/test_amp.py). In fp32 chunks are not padded (as before).
    """
    outs = []
    n = x.shape[0]
    with torch.inference_mode(), autocast(dtype, device):
        for j in range(0, n, batch):
            xb = x[j:j + batch]
            m = xb.shape[0]
            if dtype is not None and m < batch:
                xb = torch.cat([xb, xb.new_zeros((batch - m,) + tuple(xb.shape[1:]))])
            out = model(xb, **kwargs)
            parts = out if isinstance(out, (tuple, list)) else (out,)
            outs.append(tuple(p[:m].float() for p in parts))
    cat = tuple(torch.cat([o[i] for o in outs]) for i in range(len(outs[0])))
    return cat if len(cat) > 1 else cat[0]
