"""ONNX Runtime int8 quantisation of an exported model (dynamic or static), and its agreement with fp32.

Dynamic quantisation (``onnxruntime.quantization.quantize_dynamic``; weights stored as int8 with
a per-tensor scale, activations quantised per call from their observed range) turns the
R(2+1)D trunk's convolutions into ``ConvInteger`` and the BERT head's matmuls into
``MatMulInteger``. No calibration data is needed. File size drops about 4x; whether it is faster
depends on ONNX Runtime's integer kernels (see BENCHMARKS.md, "Deploy the student").

``agreement(fp32_logits, int8_logits) -> dict``: ``top1_agreement`` (fraction of clips whose
arg-max class is the same), ``max_abs_logit_error`` and ``mean_abs_logit_error`` over all
logits, ``max_prob_error`` (largest difference of a softmax probability), ``rel_logit_error``
(``||int8 - fp32|| / ||fp32||`` over all logits).

Static quantisation (``quantize_static_onnx``; ``dlkdd export --int8 static``): the recipe of
``tests/tools/bench_light_students.py``, measured faster than fp32 on the light trunks
(BENCHMARKS.md, "Lightweight students"): ``quant_pre_process`` (shape inference, ORT graph
optimisation), then ``quantize_static`` in QDQ format with per-channel int8 weights, uint8
activations and MinMax calibration on ``calib`` clips ``(N,3,T,S,S)`` in [0,1] (centred views of
training clips: :func:`calibration_clips`). The nodes of the trunk's ``int8_fp32_modules`` (the
backbone table, :mod:`dlkdd.models.backbones`) stay fp32: :func:`fp32_nodes` finds them by the module
scopes torch's exporter records on each node (``pkg.torch.onnx.name_scopes``; a batch norm folded into
its conv carries the norm's scope). The quantised file is checked against the fp32 file on ``held``
clips (training clips not used for calibration): top-1 agreement and relative logit error, stored in
the spec (``int8``) and refused past :data:`MAX_REL_LOGIT_ERROR` / below :data:`MIN_TOP1_AGREEMENT`.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from dlkdd.deploy.spec import ExportError, require_export_extra, spec_to_json

log = logging.getLogger(__name__)

__all__ = ["quantize_onnx", "quantize_static_onnx", "agreement", "calibration_clips", "fp32_nodes",
           "MAX_REL_LOGIT_ERROR", "MIN_TOP1_AGREEMENT"]

# static int8 is refused past these (int8 vs fp32 on the held clips): clearly broken, not merely int8. The light
# recipe gave 0.06-0.08 relative logit error at 16x112x112 (about 0.3 on the tests' 4x32x32 clips, where the
# trunk ends at 1x1); quantising every conv of EfficientNet-Lite0 gave 0.54 and 4/8 top-1 (BENCHMARKS.md).
MAX_REL_LOGIT_ERROR = 0.5
MIN_TOP1_AGREEMENT = 0.5


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
        _save_with_spec(onnx.load(tmp), dst, spec)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def _save_with_spec(m: Any, dst: Path, spec: Mapping[str, Any]) -> None:
    """Write ONNX model ``m`` to ``dst`` with ``spec`` (and its classes and clip) in its metadata."""
    import onnx

    props = {p.key: p for p in m.metadata_props}
    for key, value in (("dlkdd", spec_to_json(spec)), ("classes", json.dumps(list(spec["classes"]))),
                       ("clip", json.dumps(dict(spec["clip"]), sort_keys=True))):
        if key in props:
            props[key].value = value
        else:
            entry = m.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(m, str(dst))


def fp32_nodes(model_path: str | os.PathLike, modules: Sequence[str]) -> list[str]:
    """Names of the nodes of exported ONNX ``model_path`` recorded under any of ``modules`` (full module paths
    of the exported wrapper, e.g. ``model.backbone._blocks.0``; a path covers the modules under it).

    A module may own no node (a batch norm folded into its conv takes the conv's node, under the norm's
    scope); :class:`ExportError` when no module owns any: the exporter stopped recording scopes, and the
    file would be quantised where it must not be."""
    import ast

    import onnx

    names = []
    for node in onnx.load(str(model_path)).graph.node:
        raw = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        try:
            scopes = ast.literal_eval(raw) if raw else []
        except (ValueError, SyntaxError):
            scopes = []
        if any(s == m or s.startswith(m + ".") for s in scopes for m in modules):
            names.append(node.name)
    if not names:
        raise ExportError(f"{model_path}: no ONNX node records a scope of {', '.join(modules)} (the backbone "
                          "table's int8_fp32_modules): cannot keep them fp32; not quantised")
    return names


def _session(path: str | os.PathLike):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _run(session: Any, clips: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.from_numpy(session.run(None, {"clip": c[None].numpy()})[0]) for c in clips])


def quantize_static_onnx(src: str | os.PathLike, dst: str | os.PathLike, spec: Mapping[str, Any],
                         calib: torch.Tensor, held: torch.Tensor, keep_fp32: Sequence[str],
                         info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Static int8 of ONNX model ``src`` to ``dst`` (may be the same path); see the module docstring.

    ``keep_fp32``: node names left in fp32 (:func:`fp32_nodes`); ``info``: calibration facts stored with
    the check under the spec's ``int8``. Returns the spec written into ``dst`` (``quantization``
    ``int8-static``); :class:`ExportError` (``dst`` untouched) when int8 disagrees with fp32 on ``held``."""
    require_export_extra("onnx", "onnxruntime", what="int8 quantisation")
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = ({"clip": c[None].numpy()} for c in calib)

        def get_next(self):
            return next(self.it, None)

    dst = Path(dst)
    tmpdir = tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".int8", dir=dst.parent)
    pre, out = Path(tmpdir) / "pre.onnx", Path(tmpdir) / "int8.onnx"
    root = logging.getLogger()  # onnxruntime.quantization logs per tensor on the root logger
    level = root.level
    try:
        root.setLevel(max(level, logging.WARNING))
        try:
            quant_pre_process(str(src), str(pre))
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            nodes_to_exclude=list(keep_fp32))
        finally:
            root.setLevel(level)
        ref, got = _run(_session(src), held), _run(_session(out), held)
        check = agreement(ref, got)
        log.info("static int8 vs fp32 on %d held clips: top-1 agreement %.3f, relative logit error %.3g",
                 check["n"], check["top1_agreement"], check["rel_logit_error"])
        if check["rel_logit_error"] > MAX_REL_LOGIT_ERROR or check["top1_agreement"] < MIN_TOP1_AGREEMENT:
            raise ExportError(f"static int8 disagrees with fp32 on {check['n']} held training clips: top-1 agreement "
                              f"{check['top1_agreement']:.0%} (min {MIN_TOP1_AGREEMENT:.0%}), relative logit error "
                              f"{check['rel_logit_error']:.3f} (max {MAX_REL_LOGIT_ERROR}); not written - "
                              "export fp32 (no --int8)")
        new = dict(spec, quantization="int8-static",
                   int8={"method": "static", "format": "QDQ", "weights": "int8, per channel",
                         "activations": "uint8", "calibrator": "MinMax", **dict(info or {}),
                         "fp32_nodes": len(keep_fp32), "check": check})
        _save_with_spec(onnx.load(str(out)), dst, new)
        return new
    finally:
        import shutil

        shutil.rmtree(tmpdir, ignore_errors=True)


def calibration_clips(config: Mapping[str, Any], n: int, held: int = 8,
                      calib_list: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(calib (n,3,T,S,S), held (m,3,T,S,S), info)``: centred views of training clips of the checkpoint
    config ``config`` (its ``data`` section, or ``calib_list`` as ``data.train_list``) at its clip spec, in
    [0,1], decoded as training decodes them. ``calib``: ``n`` clips evenly spaced over the list (so every
    class is seen); ``held``: up to ``held`` others, evenly spaced over the rest (the agreement check).
    :class:`ExportError` naming the list when it cannot be read or holds fewer than ``n + 1`` clips."""
    import numpy as np

    from dlkdd.config import config_from_dict
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.data.video import probe
    from dlkdd.data.views import center_view, load_clips
    from dlkdd.errors import DlkddError

    cfg = config_from_dict(dict(config or {}))
    if calib_list is not None:
        cfg = cfg.replace(**{"data.train_list": str(calib_list)})
    where = str(calib_list) if calib_list is not None else (cfg.data.train_list or f"data.root {cfg.data.root}")
    try:
        entries = list(manifest_from_config(cfg.data, "train"))
    except (DlkddError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"static int8 calibration: cannot read the training list {where}: {first} "
                          "(give another list with --calib-list FILE)") from None
    if len(entries) < n + 1:
        raise ExportError(f"static int8 calibration: {where} holds {len(entries)} training clip(s); {n} calibrate "
                          f"and at least 1 more checks: lower --calib-clips or give a longer --calib-list")
    pick = sorted({int(i) for i in np.linspace(0, len(entries) - 1, n).round()})
    rest = [i for i in range(len(entries)) if i not in set(pick)]
    m = min(held, len(rest))
    keep = [rest[int(i)] for i in np.linspace(0, len(rest) - 1, m).round()] if m else []

    def decode(idx: list[int]) -> torch.Tensor:
        clips = [torch.empty(0, 3, cfg.clip.frames, cfg.clip.size, cfg.clip.size)]
        for i in idx:
            e = entries[i]
            try:
                meta = probe(e.path)
                clips += load_clips(e.path, [center_view(meta.num_frames, cfg.clip, meta.height, meta.width)],
                                    cfg.clip.size)
            except (DlkddError, OSError, ValueError) as err:
                raise ExportError(f"static int8 calibration: cannot decode {e.path}: {err}") from None
        return torch.cat([clips[0], torch.stack(clips[1:])]) if len(clips) > 1 else clips[0]

    info = {"calibration": {"list": where, "clips": len(pick), "of": len(entries), "view": "centre",
                            "clip": {"frames": cfg.clip.frames, "size": cfg.clip.size}},
            "check_clips": len(keep)}
    return decode(pick), decode(keep), info


def agreement(ref: torch.Tensor, other: torch.Tensor) -> dict[str, Any]:
    """How closely logits ``other`` (N,C) follow ``ref`` (N,C); see the module docstring."""
    ref, other = ref.float(), other.float()
    err = (other - ref).abs()
    return {"n": int(ref.shape[0]),
            "top1_agreement": float((ref.argmax(-1) == other.argmax(-1)).float().mean()),
            "max_abs_logit_error": float(err.max()), "mean_abs_logit_error": float(err.mean()),
            "max_prob_error": float((other.softmax(-1) - ref.softmax(-1)).abs().max()),
            "rel_logit_error": float((other - ref).norm() / ref.norm().clamp_min(1e-12))}
