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

A CPU that has the flags is also *checked* before ``auto`` picks bf16 (:func:`cpu_bf16_sound`): on an
AMD EPYC with ``avx512_bf16`` (torch 2.13.0+cpu, December 2026) the weight gradient of a temporal (3,1,1)
Conv3d on a 2-frame input came out non-finite under bf16 autocast, so R(2+1)D training stopped with a
non-finite loss at step 1 or 2 (``make demo`` on arid6), while an earlier machine of the same name trained
correctly in bf16. ``auto`` falls back to fp32 there and says why; ``bf16`` still forces it.

``DLKDD_CPU_BF16=1|0`` overrides the CPU detection and the check (tests, or a CPU that misreports its flags).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
from typing import Iterable

import torch

log = logging.getLogger(__name__)

__all__ = ["AMP_CHOICES", "ENV_OVERRIDE", "cpu_flags", "cpu_native_bf16", "cpu_bf16_sound", "autocast_dtype", "amp_name",
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


# relative error of the bf16 probe's gradients against fp32 above which bf16 is not used by ``auto``
# (bf16 keeps 8 bits of mantissa: correct kernels land near 1e-2 on this probe)
PROBE_TOLERANCE = 0.1


def _probe_error() -> float:
    """Max relative error (inf if non-finite) of the input and weight gradients of a temporal (3,1,1)
    Conv3d on a 2-frame input, under bf16 autocast against fp32 - the op found wrong on one CPU."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 16, 3, 1, 1, generator=g) * 0.1
    x0 = torch.randn(8, 16, 2, 7, 7, generator=g)
    grads = []
    for dtype in (None, torch.bfloat16):
        conv = torch.nn.Conv3d(16, 16, (3, 1, 1), padding=(1, 0, 0), bias=False)
        with torch.no_grad():
            conv.weight.copy_(w)
        x = x0.clone().requires_grad_(True)
        with autocast(dtype, "cpu"):
            y = conv(x)
        y.float().square().sum().backward()
        grads.append((conv.weight.grad, x.grad))
    err = 0.0
    for ref, got in zip(grads[0], grads[1]):
        if not bool(torch.isfinite(got).all()):
            return float("inf")
        err = max(err, float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)))
    return err


@functools.lru_cache(maxsize=None)
def cpu_bf16_sound() -> bool:
    """Whether this CPU's bf16 autocast computes a temporal convolution's gradients correctly
    (:func:`_probe_error` within :data:`PROBE_TOLERANCE`; a few ms, once per process)."""
    try:
        err = _probe_error()
    except RuntimeError as e:  # no bf16 kernel at all
        log.debug("bf16 probe failed: %s", e)
        return False
    if err > PROBE_TOLERANCE:
        log.warning("this CPU's bf16 convolution gradients are wrong (relative error %s in dlkdd's probe): "
                    "amp=auto uses fp32", "non-finite" if err == float("inf") else f"{err:.3g}")
        return False
    return True


def autocast_dtype(amp: str, device: str | torch.device, native_bf16: bool | None = None) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device``: ``torch.bfloat16`` or None (fp32, no autocast).

    ``native_bf16``: whether the CPU computes bf16 natively and correctly (default: :func:`cpu_native_bf16`
    and :func:`cpu_bf16_sound`, the latter skipped where ``DLKDD_CPU_BF16`` decides).
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
    if kind == "cpu" and (_cpu_bf16() if native_bf16 is None else native_bf16):
        return torch.bfloat16
    return None


def _cpu_bf16() -> bool:
    """``auto`` on this CPU: native bf16 (:func:`cpu_native_bf16`) whose kernels pass :func:`cpu_bf16_sound`;
    ``DLKDD_CPU_BF16`` decides alone where set."""
    if os.environ.get(ENV_OVERRIDE, "").strip() in ("0", "1"):
        return cpu_native_bf16()
    return cpu_native_bf16() and cpu_bf16_sound()


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
        if name == "bf16" or not cpu_native_bf16():
            why = "amp=auto, CPU " + ("with" if name == "bf16" else "without") + " native bf16"
        else:
            why = "amp=auto, CPU with native bf16 whose convolution gradients failed dlkdd's check"
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
