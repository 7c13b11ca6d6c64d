"""Export a dlkdd classifier checkpoint to ONNX or TorchScript.

In: a self-contained checkpoint (student, baseline, teacher: enhancer + classifier, ActLumos
teacher). Out: one file whose graph maps ``clip`` float32 ``(B,3,T,S,S)`` in [0,1] to ``logits``
float32 ``(B,C)`` - the enhancer (teachers) and the mean/std normalisation are inside - plus the
spec of :mod:`dlkdd.deploy.spec` embedded in it and written beside it as ``<file>.json``.

- ONNX: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter; needs
  onnxscript). Batch and frames are symbolic dimensions (``torch.export.Dim``), frames bounded by
  the BERT head's position embeddings (``spec.frame_range``); height and width stay at the clip
  spec's size. The TorchScript-based exporter (``dynamo=False``) is not used: it records the
  sequence length of ``nn.MultiheadAttention``'s reshapes as a constant, so a BERT-head export
  would only run at the frame count it was traced with.
- TorchScript: ``torch.jit.trace`` of the eval-mode model. Tracing records tensor sizes as size
  ops, so batch, frames, height and width all stay free; the shape checks of the Python forward
  (``Classifier.forward``, ``BertHead.forward``) become constants in the trace, which is why
  :class:`dlkdd.deploy.runtime.ExportedModel` re-checks inputs against the spec.
- ``int8="dynamic"`` (or ``True``; ONNX): ONNX Runtime dynamic quantisation of the exported graph
  (:mod:`dlkdd.deploy.quantize`).
- ``int8="static"`` (ONNX): ONNX Runtime static quantisation (QDQ) calibrated on ``calib_clips``
  centred training clips of the checkpoint's own config (its ``data`` list, or ``calib_list``), decoded
  at its clip spec; the trunk's ``int8_fp32_modules`` (the backbone table) stay fp32, and a trunk
  without that recipe is refused. The int8 file is checked against the fp32 export on held training
  clips (top-1 agreement, relative logit error, in the spec's ``int8``); clear disagreement is refused.

After writing, the file is loaded back with its runtime and run on a random clip next to the
checkpoint's model: ``max_abs_diff`` of the logits is returned, and an fp32 export that differs
by more than ``tol`` is refused (the file is not kept); int8 files are not held to ``tol``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlkdd.deploy.spec import ExportError, build_spec, require_export_extra, sidecar_path, spec_to_json

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "INT8_METHODS", "ExportOptions", "export_checkpoint", "export_model", "static_int8_copy",
           "LogitsOnly", "check_export"]

FORMATS = ("onnx", "torchscript")
INT8_METHODS = ("dynamic", "static")
OPSET = 18
_NOT_CLASSIFIERS = ("enhancer", "pretrain")


class LogitsOnly(nn.Module):
    """``clip (B,3,T,H,W) -> logits (B,C)``: the model's forward without ``return_features``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model(clip)


@contextlib.contextmanager
def _quiet_tracing():
    """Silence the expected TracerWarnings (shape checks turned into constants), the ONNX
    exporter's notes about torchvision ops it cannot register (dlkdd uses none) and the INFO
    logs of its graph optimiser (onnxscript / onnx_ir)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx._internal.exporter._registration", "onnx_ir", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.export's own pytree deprecations
        # torch 2.13 marks torch.jit deprecated (README, "Deploy the student"); it still works and is tested
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _example(spec: dict[str, Any], seed: int = 0) -> torch.Tensor:
    """A random clip (2,3,T,S,S) at the spec's size; T = the clip's frames, at least 2*8 so that
    no dimension of the trace is 1 (torch.export specialises size-1 dimensions)."""
    frames = int(spec["clip"]["frames"])
    hi = spec["dynamic"]["frames"]["max"]
    t = max(frames, 16) if hi is None else min(max(frames, 16), hi)
    size = int(spec["input"]["size"])
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, t, size, size, generator=g)


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, spec: dict[str, Any], tmp: Path, opset: int) -> None:
    require_export_extra("onnx", "onnxscript", "onnxruntime")
    import json

    from torch.export import Dim

    lo, hi = spec["dynamic"]["frames"]["min"], spec["dynamic"]["frames"]["max"]
    frames = Dim("frames", min=lo, max=hi) if hi is not None else Dim("frames", min=lo)
    dyn = ({0: Dim("batch", min=1), 2: frames},)
    with _quiet_tracing():
        try:
            prog = torch.onnx.export(wrapper, (example,), dynamo=True, input_names=["clip"], output_names=["logits"],
                                     dynamic_shapes=dyn, opset_version=opset, verbose=False, external_data=False)
        except Exception as e:  # the exporter raises many types; the first line is what matters
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {first[:300]}") from e
    props = prog.model.metadata_props
    props["dlkdd"] = spec_to_json(spec)
    props["classes"] = json.dumps(spec["classes"])
    props["clip"] = json.dumps(spec["clip"], sort_keys=True)
    prog.save(tmp, external_data=False)


def _export_torchscript(wrapper: nn.Module, example: torch.Tensor, spec: dict[str, Any], tmp: Path) -> None:
    with _quiet_tracing(), torch.no_grad():
        try:
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        except Exception as e:  # tracing surfaces whatever the forward raises on traced sizes
            raise ExportError(f"torch.jit.trace failed: {type(e).__name__}: {str(e).strip()[:300]}") from e
        # into memory, then one Python write: torch.jit.save to a path that runs out of room (full disk,
        # ulimit -f) ends the process from a C++ destructor (std::terminate), which nothing can catch
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={"dlkdd.json": spec_to_json(spec)})
    tmp.write_bytes(buf.getbuffer())


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """``opset`` (ONNX), ``int8`` (ONNX Runtime quantisation: None, ``"dynamic"`` (``True`` too) or
    ``"static"``), ``check`` the written file against the model, accepting a largest logit difference of
    ``tol`` (fp32). Static int8: ``calib_clips`` training clips calibrate, from ``calib_list`` when given
    (else the checkpoint config's ``data.train_list``)."""

    opset: int = OPSET
    int8: bool | str | None = None
    check: bool = True
    tol: float = 1e-4
    calib_clips: int = 16
    calib_list: str | None = None

    @property
    def int8_method(self) -> str | None:
        if self.int8 is True:
            return "dynamic"
        if self.int8 in (None, False, ""):
            return None
        if self.int8 not in INT8_METHODS:
            raise ExportError(f"unknown int8 method {self.int8!r}; choose {' or '.join(INT8_METHODS)}")
        return str(self.int8)


def export_model(model: nn.Module, ckpt: dict[str, Any], out: str | os.PathLike, fmt: str, *,
                 source: str | os.PathLike = "checkpoint", source_sha256: str | None = None,
                 opts: ExportOptions | None = None, **options: Any) -> dict[str, Any]:
    """Export ``model`` (rebuilt from ``ckpt``) to ``out``; returns the spec plus ``path``,
    ``bytes`` and ``check`` (``{"max_abs_diff", "input_shape"}``, or None with ``check=False``).
    ``opts``: an :class:`ExportOptions`, or its fields as keywords."""
    from dlkdd.utils import atomic_path, atomic_write_text

    o = opts if opts is not None else ExportOptions(**options)
    opset, int8, check, tol = o.opset, o.int8_method, o.check, o.tol
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose {' or '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ExportError("--int8 is ONNX Runtime quantisation: use it with --format onnx")
    model = model.eval().cpu()
    _check_exportable(model, source)
    spec = build_spec(ckpt, model, fmt, source, source_sha256, spatial_dynamic=fmt == "torchscript")
    wrapper = LogitsOnly(model).eval()
    if int8 == "static":  # before the slow export: the recipe, then the calibration clips
        from dlkdd.deploy.quantize import calibration_clips

        keep_modules = _static_recipe(wrapper, ckpt, source)
        calib, held, calib_info = calibration_clips(ckpt.get("config") or {}, o.calib_clips, calib_list=o.calib_list)
    example = _example(spec)
    out = Path(out)
    log.info("exporting %s (%s, %s head, %d classes) to %s at input (B,3,T,%d,%d)", source, spec["arch"]["backbone"],
             spec["arch"]["head"], spec["num_classes"], fmt, example.shape[-2], example.shape[-1])
    needed = sum(t.numel() * t.element_size() for t in model.state_dict().values())  # about the file's size
    with atomic_path(out, needed=needed) as tmp:
        if fmt == "onnx":
            _export_onnx(wrapper, example, spec, tmp, opset)
            if int8 == "dynamic":
                from dlkdd.deploy.quantize import quantize_onnx

                spec["quantization"] = "int8-dynamic"
                quantize_onnx(tmp, tmp, spec)
            elif int8 == "static":
                from dlkdd.deploy.quantize import fp32_nodes, quantize_static_onnx

                names = fp32_nodes(tmp, keep_modules)
                spec = quantize_static_onnx(tmp, tmp, spec, calib, held, names,
                                            dict(calib_info, fp32_modules=list(keep_modules)))
        else:
            _export_torchscript(wrapper, example, spec, tmp)
        result = dict(spec, path=str(out), bytes=tmp.stat().st_size, check=None)
        if check:
            result["check"] = check_export(tmp, model, example, spec, tol)
    atomic_write_text(sidecar_path(out), spec_to_json(spec) + "\n")
    return result


def static_int8_copy(model: nn.Module, ckpt: dict[str, Any], src: str | os.PathLike, dst: str | os.PathLike,
                     calib_clips: int = 16, calib_list: str | os.PathLike | None = None,
                     source: Any = "checkpoint") -> dict[str, Any]:
    """Static int8 of ``src`` (an fp32 ONNX export of ``model``, rebuilt from ``ckpt``) to ``dst``, as
    ``dlkdd export --int8 static`` makes it; returns its spec (``int8``: calibration and check)."""
    from dlkdd.deploy.quantize import calibration_clips, fp32_nodes, quantize_static_onnx
    from dlkdd.deploy.runtime import load_exported

    keep = _static_recipe(LogitsOnly(model), ckpt, source)
    calib, held, info = calibration_clips(ckpt.get("config") or {}, calib_clips, calib_list=calib_list)
    spec = dict(load_exported(src).spec)
    return quantize_static_onnx(src, dst, spec, calib, held, fp32_nodes(src, keep), dict(info, fp32_modules=keep))


def _static_recipe(wrapper: nn.Module, ckpt: dict[str, Any], source: Any) -> list[str]:
    """Full module paths (in ``wrapper``) of the trunk modules that static int8 keeps fp32: the backbone
    table's ``int8_fp32_modules`` under the trunk's own path; refused for a trunk without a recipe."""
    from dlkdd.models.backbones import backbone_spec

    name = str((ckpt.get("arch") or {}).get("backbone", "r2plus1d_18"))
    modules = backbone_spec(name).int8_fp32_modules
    if modules is None:
        raise ExportError(f"{source}: no static int8 recipe for backbone {name} (none measured faster than fp32; "
                          "dynamic int8 ran 5x slower than fp32 on R(2+1)D-18, BENCHMARKS.md): export fp32, or "
                          "--int8 dynamic for a 4x smaller file")
    trunks = [n for n, _ in wrapper.named_modules() if n.rsplit(".", 1)[-1] == "backbone"]
    if len(trunks) != 1:
        raise ExportError(f"{source}: static int8 needs one trunk module named 'backbone' in the model, found "
                          f"{len(trunks)}")
    full = [f"{trunks[0]}.{m}" for m in modules]
    present = {n for n, _ in wrapper.named_modules()}
    stale = [m for m in full if m not in present]
    if stale:  # the table names modules the trunk no longer has: the recipe would silently keep less in fp32
        raise ExportError(f"the backbone table's int8_fp32_modules of {name} name module(s) the model lacks: "
                          f"{', '.join(stale)}")
    return full


def _check_exportable(model: nn.Module, source: Any) -> None:
    """Refuse, before the slow export, models with parts known not to export."""
    from dlkdd.models.enhancers import MultiScaleRetinex

    if any(isinstance(m, MultiScaleRetinex) for m in model.modules()):
        raise ExportError(f"{source}: holds a multi-scale Retinex enhancer (ActLumos teacher or enhancer.kind=retinex), "
                          "whose per-frame quantiles (kthvalue at ranks computed in Python from the frame size) neither "
                          "trace to TorchScript nor convert to ONNX; export the student, which has no enhancer")


def check_export(path: Path, model: nn.Module, example: torch.Tensor, spec: dict[str, Any], tol: float) -> dict[str, Any]:
    """Logits of the written file vs the eager model on ``example``; fp32 beyond ``tol`` raises."""
    from dlkdd.deploy.runtime import load_exported

    exported = load_exported(path, fmt=spec["runtime"])
    with torch.inference_mode():
        ref = model(example).float()
        got = exported(example)
    diff = float((got - ref).abs().max())
    log.info("check: max |logit difference| %.3g vs the checkpoint on a random %s clip", diff, tuple(example.shape))
    if spec.get("quantization") is None and not diff <= tol:
        raise ExportError(f"the exported {spec['runtime']} model's logits differ from the checkpoint's by {diff:.3g} "
                          f"(> {tol:g}) on a random {spec['input']['name']}; not written")
    return {"max_abs_diff": diff, "input_shape": list(example.shape)}


def export_checkpoint(ckpt_path: str | os.PathLike, out: str | os.PathLike, fmt: str, **kwargs: Any) -> dict[str, Any]:
    """:func:`export_model` of the model stored in checkpoint ``ckpt_path``."""
    from dlkdd.models.build import model_from_checkpoint
    from dlkdd.models.families import family_of_arch
    from dlkdd.train.checkpoint import load_checkpoint
    from dlkdd.utils import sha256_file

    if fmt == "onnx":  # fail before the (slow) checkpoint load when the extra is missing
        require_export_extra("onnx", "onnxscript", "onnxruntime")
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.get("kind") in _NOT_CLASSIFIERS:
        raise ExportError(f"{ckpt_path}: a {ckpt.get('kind')} checkpoint is not a classifier; export a student, "
                          "baseline or teacher checkpoint")
    model = model_from_checkpoint(ckpt, str(ckpt_path))
    opts = kwargs.pop("opts", None) or ExportOptions(**kwargs)
    own = family_of_arch(ckpt.get("arch") or {}).own_export(model, ckpt, ckpt_path, out, fmt, opts)
    if own is not None:  # a family whose model does not take video clips (pose: keypoints)
        return own
    return export_model(model, ckpt, out, fmt, source=ckpt_path, source_sha256=sha256_file(ckpt_path), opts=opts)
