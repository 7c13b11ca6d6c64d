"""Load and run an exported model with the same interface as a checkpoint's model.

``load_exported(path) -> ExportedModel``: a callable ``clip (B,3,T,H,W)`` float in [0,1] (a torch
tensor or a numpy array) -> ``logits`` torch float32 ``(B,C)`` on the clip's device, with
``.classes``, ``.clip`` (:class:`dlkdd.config.ClipConfig`), ``.spec`` and ``.runtime``
(``"onnx"``: ONNX Runtime, CPU execution provider; ``"torchscript"``: ``torch.jit.load``).
Inputs are checked against the spec (layout, frame range, crop size) before they reach the
runtime, so a wrong clip gives one clear :class:`~dlkdd.deploy.spec.ExportError`.

``detect_format(path)`` tells an exported file from a checkpoint by content (a TorchScript
archive holds ``code/``, a checkpoint does not; ONNX by the ``.onnx`` suffix or its first
protobuf byte). ``load_for_predict(path, device)`` returns ``(model, ckpt-like dict)`` for an export,
which is what :func:`dlkdd.pipeline.evaluate.load_model` returns, so ``dlkdd predict`` and ``dlkdd
evaluate`` take an exported file wherever they take a checkpoint.
"""
from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlkdd.deploy.spec import ExportError, require_export_extra, sidecar_path, spec_from_json

log = logging.getLogger(__name__)

__all__ = ["ExportedModel", "OnnxModel", "TorchScriptModel", "detect_format", "load_exported", "load_for_predict"]


class ExportedModel:
    """Common part of the runtimes: spec, input checks, the checkpoint-like view."""

    runtime = "?"

    def __init__(self, path: str | os.PathLike, spec: dict[str, Any]):
        from dlkdd.config import ClipConfig

        self.path = Path(path)
        self.spec = spec
        _compare_sidecar(self.path, spec)
        self.classes: list[str] = list(spec["classes"])
        self.clip = ClipConfig(**{k: v for k, v in spec["clip"].items() if k in ClipConfig.__dataclass_fields__})
        self.device = torch.device("cpu")

    # nn.Module-like no-ops, so callers written for a checkpoint's model work unchanged
    def eval(self) -> "ExportedModel":
        return self

    def to(self, device: Any) -> "ExportedModel":
        self.device = torch.device(device)
        return self

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`ExportError` when ``x`` does not fit the exported graph."""
        shape = tuple(x.shape)
        if self.spec["input"].get("name") == "keypoints":  # a pose family's skeleton network (dlkdd.pose.export)
            if len(shape) != 4 or shape[2:] != (33, 4) or shape[1] < self.spec["dynamic"]["frames"]["min"]:
                raise ExportError(f"{self.path.name}: expects keypoints (B,T,33,4) with T >= "
                                  f"{self.spec['dynamic']['frames']['min']}, got {shape}")
            return
        if len(shape) != 5 or shape[1] != 3:
            raise ExportError(f"{self.path.name}: expects clips (B,3,T,H,W), got {shape}")
        lo, hi = self.spec["dynamic"]["frames"]["min"], self.spec["dynamic"]["frames"]["max"]
        if shape[2] < lo or (hi is not None and shape[2] > hi):
            raise ExportError(f"{self.path.name}: takes {lo}..{hi} frames, got {shape[2]} "
                              f"({self.spec['dynamic']['note']})")
        size = int(self.spec["input"]["size"])
        if not self.spec["dynamic"].get("spatial") and shape[3:] != (size, size):
            raise ExportError(f"{self.path.name}: takes {size}x{size} crops, got {shape[3]}x{shape[4]}")

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(x)
        self.check_input(t)
        return self._run(t.float()).to(t.device)

    def _run(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def as_checkpoint(self) -> dict[str, Any]:
        """The fields of a checkpoint that ``predict`` reads: kind, classes, config.clip, arch."""
        return {"kind": self.spec.get("kind"), "classes": list(self.classes), "config": {"clip": dict(self.spec["clip"])},
                "arch": dict(self.spec.get("arch") or {}), "exported": dict(self.spec)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {len(self.classes)} classes)"


def _compare_sidecar(path: Path, spec: dict[str, Any]) -> None:
    """Warn when ``FILE.json`` beside an export says something else than the spec embedded in it (an edited
    or stale copy): the embedded spec is the one used."""
    side = sidecar_path(path)
    if not side.is_file():
        return
    try:
        other = spec_from_json(side.read_text(), str(side))
    except (OSError, ExportError, ValueError):
        log.warning("%s: unreadable spec beside %s; the spec embedded in the model is used", side, path.name)
        return
    diff = sorted(k for k in set(spec) | set(other) if spec.get(k) != other.get(k))
    if diff:
        log.warning("%s differs from the spec embedded in %s (%s); the embedded one is used: re-export, or delete "
                    "the stale %s", side, path.name, ", ".join(diff[:5]), side.name)


class OnnxModel(ExportedModel):
    """An ONNX export run by ONNX Runtime on the CPU. ``threads``: intra-op threads (0: ORT's default)."""

    runtime = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int = 0):
        require_export_extra("onnxruntime", what="Running an ONNX model")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
            raise ExportError(f"{path}: ONNX Runtime cannot load it: {str(e).strip().splitlines()[0][:300]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "dlkdd" not in meta:
            raise ExportError(f"{path}: an ONNX model without dlkdd metadata (no 'dlkdd' in metadata_props); "
                              "export it with `dlkdd export CKPT --format onnx`")
        super().__init__(path, spec_from_json(meta["dlkdd"], str(path)))
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([self._output], {self._input: arr})[0])


class TorchScriptModel(ExportedModel):
    """A TorchScript export (``torch.jit.load``) on ``device``."""

    runtime = "torchscript"

    def __init__(self, path: str | os.PathLike, device: Any = "cpu"):
        import warnings

        extra = {"dlkdd.json": ""}
        try:
            with warnings.catch_warnings():  # torch 2.13 marks torch.jit deprecated; it still loads and runs
                warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
                self.module = torch.jit.load(str(path), map_location=torch.device(device), _extra_files=extra)
        except (RuntimeError, ValueError) as e:
            raise ExportError(f"{path}: not a loadable TorchScript archive: {str(e).strip().splitlines()[0][:300]}"
                              ) from None
        text = extra["dlkdd.json"]
        if not text and sidecar_path(path).is_file():
            text = sidecar_path(path).read_text()
        if not text:
            raise ExportError(f"{path}: a TorchScript archive without dlkdd metadata (no extra file dlkdd.json, no "
                              f"{sidecar_path(path).name}); export it with `dlkdd export CKPT --format torchscript`")
        super().__init__(path, spec_from_json(text, str(path)))
        self.module.eval()
        self.device = torch.device(device)

    def to(self, device: Any) -> "TorchScriptModel":
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(x.to(self.device)).float()


def detect_format(path: str | os.PathLike) -> str | None:
    """``"onnx"``, ``"torchscript"`` or None (not an exported model: a checkpoint, or nothing)."""
    p = Path(path)
    if not p.is_file():
        return None
    if zipfile.is_zipfile(p):  # by contents first: a TorchScript archive named .onnx is TorchScript
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        return None
    if p.suffix.lower() == ".onnx":
        return "onnx"
    with open(p, "rb") as f:
        head = f.read(1)
    return "onnx" if head == b"\x08" else None  # ModelProto field 1 (ir_version), varint


def load_exported(path: str | os.PathLike, device: Any = "cpu", fmt: str | None = None,
                  threads: int = 0) -> ExportedModel:
    """Load an exported model (see the module docstring); ``fmt`` skips the detection."""
    fmt = fmt or detect_format(path)
    if fmt == "onnx":
        return OnnxModel(path, threads=threads).to(device)
    if fmt == "torchscript":
        return TorchScriptModel(path, device)
    raise ExportError(f"{path}: not an exported model (expected a .onnx file or a TorchScript archive from "
                      "`dlkdd export`)")


def load_for_predict(path: str | os.PathLike, device: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """``(ExportedModel, its checkpoint-like view)`` of a file written by ``dlkdd export`` (checkpoints are
    :func:`dlkdd.pipeline.evaluate.load_model`'s, which calls this for exported files)."""
    fmt = detect_format(path)
    if fmt is None:
        raise ExportError(f"{path}: not an exported model (expected a .onnx file or a TorchScript archive from "
                          "`dlkdd export`)")
    model = load_exported(path, device, fmt=fmt)
    log.info("%s: %s export, %d classes, clip %s", path, fmt, len(model.classes), model.spec["clip"])
    return model, model.as_checkpoint()
