"""Cost profile of a model on one input: parameters, FLOPs/MACs, peak memory, latency.

``profile_model(model, input_shape, device="cpu", repeats=3) -> dict`` with

- ``params``: number of parameters (all, trainable or not - a Teacher's frozen enhancer counts);
- ``gflops``: 1e-9 x FLOPs of one forward counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls and convolutions, 2 FLOPs per multiply-accumulate; element-wise ops, norms and
  pooling are not counted, as in the usual "FLOPs" tables); ``gmacs = gflops / 2``.
  Papers often report MACs under the name "FLOPs" (e.g. fvcore, thop): compare with ``gmacs``.
- ``peak_mem_mb``: on CUDA, ``torch.cuda.max_memory_allocated`` during one inference forward
  (weights included, after a reset). On CPU there is no allocator statistic, so it is an
  *estimate of activation memory*: the peak total size of the distinct tensor storages that the
  forward's ops create and that are still alive (tracked op by op with a
  ``TorchDispatchMode``), excluding parameters, buffers and the input.
- ``latency_ms``: median wall time of ``repeats`` forwards under ``torch.inference_mode``
  after one warm-up (CUDA synchronised).
The model is put in eval mode for the measurement and its previous mode restored.
"""
from __future__ import annotations

import logging
import statistics
import time
import weakref
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger(__name__)

__all__ = ["profile_model", "count_flops", "LiveTensorTracker"]


class LiveTensorTracker(TorchDispatchMode):
    """Peak bytes of live tensor storages created by ops run under this mode (CPU estimate).

    Each op output's storage is counted once (views share it); it is released when the last
    tracked Python tensor referring to it is garbage collected.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage key -> [n live tensors, nbytes]

    def _release(self, key: int) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            st = t.untyped_storage()
            key = st.data_ptr()
            if key == 0:
                continue
            entry = self._refs.get(key)
            if entry is None:
                entry = self._refs[key] = [0, st.nbytes()]
                self.live += entry[1]
                self.peak = max(self.peak, self.live)
            entry[0] += 1
            weakref.finalize(t, self._release, key)
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 per MAC) of ``model(x)`` counted by FlopCounterMode (no gradient)."""
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return int(fc.get_total_flops())


def profile_model(model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu",
                  repeats: int = 3) -> dict[str, Any]:
    """Profile ``model`` on a random input of ``input_shape`` (e.g. (1,3,16,112,112)); see module doc."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    was_training = model.training
    model = model.to(device).eval()
    x = torch.rand(*input_shape, device=device)
    try:
        params = sum(p.numel() for p in model.parameters())
        flops = count_flops(model, x)

        with torch.inference_mode():
            if device.type == "cuda":
                _sync(device)
                torch.cuda.reset_peak_memory_stats(device)
                model(x)
                _sync(device)
                peak_bytes = torch.cuda.max_memory_allocated(device)
            else:
                tracker = LiveTensorTracker()
                with tracker:
                    out = model(x)
                del out
                peak_bytes = tracker.peak

            model(x)  # warm-up
            times = []
            for _ in range(repeats):
                _sync(device)
                t0 = time.perf_counter()
                model(x)
                _sync(device)
                times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        model.train(was_training)
    result = {
        "params": int(params),
        "gflops": flops / 1e9,
        "gmacs": flops / 2e9,
        "peak_mem_mb": peak_bytes / 2**20,
        "latency_ms": statistics.median(times),
    }
    log.info("profile %s on %s %s: %s", type(model).__name__, tuple(input_shape), device, result)
    return result
