"""The description that travels with an exported model, and the optional-dependency check.

An exported model takes one input ``clip``: float32 ``(B,3,T,S,S)`` in [0,1] (mean/std
normalisation and, for a teacher, the enhancer are inside the graph) and returns ``logits``
float32 ``(B,C)``. Its spec is a JSON object::

    {"format": "dlkdd-export", "spec_version": 1, "dlkdd_version": str,
     "runtime": "onnx" | "torchscript", "quantization": null | "int8-dynamic" | "int8-static",
     "kind": "student" | "baseline" | "teacher" | ..., "classes": [str, ...], "num_classes": C,
     "clip": {"frames", "stride", "size", "resize", ...},      # dlkdd.config.ClipConfig fields
     "input": {"name": "clip", "layout": "B,3,T,H,W", "dtype": "float32", "range": [0, 1],
               "size": S, "mean": [3], "std": [3]},             # mean/std applied inside
     "output": {"name": "logits", "dtype": "float32", "shape": ["batch", C]},
     "dynamic": {"batch": true, "frames": {"min": int, "max": int | null}, "spatial": bool,
                 "note": str},
     "arch": {"backbone", "head", "family", "enhancer"}, "source": {"checkpoint", "sha256"},
     "int8": {...}}                                             # only int8-static, see below

``int8`` (``dlkdd export --int8 static``, :mod:`dlkdd.deploy.quantize`): ``method``, ``format`` (QDQ),
``weights``, ``activations``, ``calibrator``, ``calibration`` {``list``, ``clips``, ``of``, ``view``,
``clip``}, ``fp32_modules`` (the module paths kept fp32), ``fp32_nodes`` (their node count),
``check_clips`` and ``check`` (int8 vs fp32 on held training clips: ``n``, ``top1_agreement``,
``rel_logit_error``, ``max_abs_logit_error``, ...).

It is stored in the ONNX model's ``metadata_props`` under the key ``dlkdd`` (with ``classes`` and
``clip`` also as their own keys, readable by any ONNX tool), inside a TorchScript archive as the
extra file ``dlkdd.json`` (``torch.jit.load(..., _extra_files=...)``, C++ ``ExtraFilesMap``), and
in both cases as a sidecar ``<file>.json`` for tools that read neither.

Time: the trunk gives ``T' = ceil(T/s)`` temporal tokens, ``s`` its ``temporal_stride`` in the backbone
table (:mod:`dlkdd.models.backbones`; 8 for R(2+1)D), and needs ``T >= min_frames``. The average
head takes any such ``T``; the BERT head has ``max_tokens`` learned position embeddings
(dlkdd/models/bert_head.py), so its exports accept ``T <= s * max_tokens`` (512 frames for R(2+1)D
by default) and no more: a longer clip has no position embedding to add. A ``model.input=diff``
model feeds the trunk the ``T-1`` differences of consecutive frames, so both bounds are one frame more.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

from dlkdd.errors import DlkddError

__all__ = ["SPEC_VERSION", "ExportError", "MissingExtraError", "require_export_extra",
           "build_spec", "spec_to_json", "spec_from_json", "sidecar_path", "frame_range"]

SPEC_VERSION = 1
EXTRA = "pip install 'dlkdd[export]'"


class ExportError(DlkddError):
    """A model cannot be exported, or a file is not a dlkdd export, or an input does not fit it."""


class MissingExtraError(ExportError):
    """An optional dependency of the export extra is not installed."""


def require_export_extra(*modules: str, what: str = "ONNX export") -> None:
    """Import ``modules`` or raise :class:`MissingExtraError` naming them and the extra to install."""
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(f"{what} needs the optional package(s) {', '.join(missing)}, not installed: "
                                f"{EXTRA} (TorchScript export needs only torch: --format torchscript)")


def frame_range(model: Any, arch: Mapping[str, Any]) -> tuple[int, int | None]:
    """``(min, max)`` clip length ``T`` the model of checkpoint ``arch`` accepts; ``max`` None when unbounded.

    From the backbone table: ``T >= min_frames``, and with BERT heads ``T <= temporal_stride * max_tokens``
    (the smallest ``max_tokens``); ``input="diff"`` adds one frame to both (the trunk sees ``T-1``).
    """
    from dlkdd.models.backbones import backbone_spec
    from dlkdd.models.bert_head import BertHead

    bb = backbone_spec(str(arch.get("backbone", "r2plus1d_18")))
    extra = 1 if arch.get("input", "rgb") == "diff" else 0
    tokens = [m.max_tokens for m in model.modules() if isinstance(m, BertHead)]
    hi = bb.temporal_stride * min(tokens) + extra if tokens else None
    return bb.min_frames + extra, hi


def _clip_dict(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    from dlkdd.config import config_from_dict

    return dataclasses.asdict(config_from_dict(ckpt.get("config") or {}).clip)


def build_spec(ckpt: Mapping[str, Any], model: Any, runtime: str, source: str | os.PathLike,
               source_sha256: str | None = None, spatial_dynamic: bool = False) -> dict[str, Any]:
    """The spec (see the module docstring) of ``model`` rebuilt from checkpoint ``ckpt``."""
    from dlkdd import __version__

    arch = dict(ckpt.get("arch") or {})
    classes = [str(c) for c in (ckpt.get("classes") or [])]
    clip = _clip_dict(ckpt)
    lo, hi = frame_range(model, arch)
    note = f"batch and frames are dynamic; frames >= {lo}"
    if arch.get("input", "rgb") == "diff":
        note += " (model.input=diff: the trunk sees the T-1 frame differences)"
    if hi is None:
        note += " (average head: no upper bound)"
    else:
        note += f", frames <= {hi} (the BERT head's position embeddings x the trunk's temporal stride)"
    note += "; " + ("height/width are dynamic" if spatial_dynamic else
                    f"height and width are fixed at {clip['size']} (the clip spec's crop)")
    enh = arch.get("enhancer")
    return {
        "format": "dlkdd-export", "spec_version": SPEC_VERSION, "dlkdd_version": __version__,
        "runtime": runtime, "quantization": None, "kind": ckpt.get("kind"),
        "classes": classes, "num_classes": len(classes), "clip": clip,
        "input": {"name": "clip", "layout": "B,3,T,H,W", "dtype": "float32", "range": [0.0, 1.0],
                  "size": int(clip["size"]), "mean": arch.get("mean"), "std": arch.get("std")},
        "output": {"name": "logits", "dtype": "float32", "shape": ["batch", len(classes)]},
        "dynamic": {"batch": True, "frames": {"min": lo, "max": hi}, "spatial": bool(spatial_dynamic), "note": note},
        "arch": {"backbone": arch.get("backbone"), "head": arch.get("head"), "family": arch.get("family", "dlkdd"),
                 "enhancer": (enh or {}).get("kind") if isinstance(enh, Mapping) else enh},
        "source": {"checkpoint": Path(source).name, "sha256": source_sha256},
    }


def spec_to_json(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, indent=1, sort_keys=True)


def spec_from_json(text: str | bytes, where: str) -> dict[str, Any]:
    """Parse and check a spec; :class:`ExportError` naming ``where`` when it is not one."""
    try:
        spec = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ExportError(f"{where}: its dlkdd metadata is not valid JSON ({e})") from None
    if not isinstance(spec, dict) or spec.get("format") != "dlkdd-export":
        raise ExportError(f"{where}: its metadata is not a dlkdd export spec")
    v = spec.get("spec_version")
    if not isinstance(v, int) or v > SPEC_VERSION:
        raise ExportError(f"{where}: export spec version {v} is newer than this dlkdd reads ({SPEC_VERSION}): "
                          "upgrade dlkdd")
    missing = [k for k in ("classes", "clip", "input", "dynamic") if k not in spec]
    if missing:
        raise ExportError(f"{where}: export spec lacks {', '.join(missing)}")
    return spec


def sidecar_path(path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")
