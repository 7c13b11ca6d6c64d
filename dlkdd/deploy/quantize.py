"""ONNX Runtime dynamic int8 quantisation of an exported model, and its agreement with fp32.

Dynamic quantisation (``onnxruntime.quantization.quantize_dynamic``; weights stored as int8 with
a per-tensor scale, activations quantised per call from their observed range) turns the
R(2+1)D trunk's convolutions into ``ConvInteger`` and the BERT head's matmuls into
``MatMulInteger``. No calibration data is needed. File size drops about 4x; whether it is faster
depends on ONNX Runtime's integer kernels (see BENCHMARKS.md, "Deploy the student").

``agreement(fp32_logits, int8_logits) -> dict``: ``top1_agreement`` (fraction of clips whose
arg-max class is the same), ``max_abs_logit_error`` and ``mean_abs_logit_error`` over all
logits, ``max_prob_error`` (largest difference of a softmax probability).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from dlkdd.deploy.spec import require_export_extra, spec_to_json

log = logging.getLogger(__name__)

__all__ = ["quantize_onnx", "agreement"]


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, spec: Mapping[str, Any]) -> Path:
    """Quantise ONNX model ``src`` to ``dst`` (may be the same path), storing ``spec`` in its metadata."""
    require_export_extra("onnx", "onnxruntime", what="int8 quantisation")
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".int8.tmp", dir=dst.parent)
    os.close(fd)
    root = logging.getLogger()  # onnxruntime.quantization logs one INFO line per tensor on the root logger
    level = root.level
    try:
        root.setLevel(max(level, logging.WARNING))
        try:
            quantize_dynamic(str(src), tmp, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        m = onnx.load(tmp)
        props = {p.key: p for p in m.metadata_props}
        for key, value in (("dlkdd", spec_to_json(spec)), ("classes", json.dumps(list(spec["classes"]))),
                           ("clip", json.dumps(dict(spec["clip"]), sort_keys=True))):
            if key in props:
                props[key].value = value
            else:
                entry = m.metadata_props.add()
                entry.key, entry.value = key, value
        onnx.save(m, str(dst))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def agreement(ref: torch.Tensor, other: torch.Tensor) -> dict[str, Any]:
    """How closely logits ``other`` (N,C) follow ``ref`` (N,C); see the module docstring."""
    ref, other = ref.float(), other.float()
    err = (other - ref).abs()
    return {"n": int(ref.shape[0]),
            "top1_agreement": float((ref.argmax(-1) == other.argmax(-1)).float().mean()),
            "max_abs_logit_error": float(err.max()), "mean_abs_logit_error": float(err.mean()),
            "max_prob_error": float((other.softmax(-1) - ref.softmax(-1)).abs().max())}
