"""Export a pose checkpoint's skeleton network: ``keypoints (B,T,33,4) -> logits (B,C)`` (ONNX or TorchScript).

The posing (decode -> enhancer -> BlazePose, :mod:`dlkdd.pose.extract`) stays outside the file: it is
MediaPipe's graph, not the network's. The file's one input ``keypoints`` is float32 ``(B, T, 33, 4)``,
BlazePose "full"'s 33 landmarks per posed frame as the pose stage stores them - x, y in [0,1] of the
(enhanced) frame, z at about x's scale relative to the hips, visibility in [0,1] - with **all four values
0 for a frame where no person was found** (that is the mask: a frame counts when any value is non-zero,
:func:`dlkdd.pose.features.mask_of`). ``T`` is dynamic (trained at ``clip.frames`` posed frames every
``clip.stride`` video frames; frames are posed every ``pose.stride``), and so is ``B``. The feature
transform (hip-centred, torso-scaled positions, velocities, body motion, mask: ``(B,T,136)``) is inside
the graph, so callers feed BlazePose's raw landmarks.

The spec (:mod:`dlkdd.deploy.spec`, embedded and beside the file as ``FILE.json``) is the video export's
with ``input`` = ``{"name": "keypoints", "layout": "B,T,33,4", "channels": ["x","y","z","visibility"], ...}``
and ``arch`` = ``{"family": "pose", "net", "width", "enhancer" (kind), "enhancer_spec", "pose" (the
sampling and tracking settings the poses must be made with)}``: enough for ``dlkdd predict FILE VIDEO``
to pose a video as the training data was. The written file is run against the checkpoint's network on
random skeletons (some frames without a person): an fp32 export that differs by more than ``tol`` is refused.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlkdd.deploy.spec import SPEC_VERSION, ExportError, require_export_extra, sidecar_path, spec_to_json

log = logging.getLogger(__name__)

__all__ = ["KEYPOINT_INPUT", "keypoint_spec", "example_keypoints", "export_skeleton"]

KEYPOINT_INPUT = {
    "name": "keypoints", "layout": "B,T,33,4", "dtype": "float32", "joints": 33,
    "channels": ["x", "y", "z", "visibility"],
    "note": "BlazePose full landmarks of each posed frame (x, y in [0,1] of the frame, z relative to the hips, "
            "visibility in [0,1]); all four 0 in every joint where no person was found (the mask); the hip-centred, "
            "torso-scaled features and velocities are computed inside",
}


class _KeypointsToLogits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        return self.model(keypoints)


def keypoint_spec(ckpt: dict, fmt: str, source: Any, source_sha256: str | None) -> dict[str, Any]:
    """The export spec of a pose checkpoint (see the module docstring)."""
    import dataclasses

    from dlkdd import __version__
    from dlkdd.config import config_from_dict

    arch = dict(ckpt.get("arch") or {})
    classes = [str(c) for c in (ckpt.get("classes") or [])]
    clip = dataclasses.asdict(config_from_dict(ckpt.get("config") or {}).clip)
    enh = dict(arch.get("enhancer") or {})
    return {
        "format": "dlkdd-export", "spec_version": SPEC_VERSION, "dlkdd_version": __version__,
        "runtime": fmt, "quantization": None, "kind": ckpt.get("kind"), "classes": classes,
        "num_classes": len(classes), "clip": clip, "input": dict(KEYPOINT_INPUT),
        "output": {"name": "logits", "dtype": "float32", "shape": ["batch", len(classes)]},
        "dynamic": {"batch": True, "frames": {"min": 2, "max": None}, "spatial": False,
                    "note": f"batch and posed frames T are dynamic (T >= 2; trained at {clip['frames']})"},
        "arch": {"family": "pose", "net": arch.get("net"), "width": arch.get("width"), "backbone": None, "head": None,
                 "enhancer": enh.get("kind"), "enhancer_spec": enh, "pose": dict(arch.get("pose") or {})},
        "source": {"checkpoint": Path(source).name, "sha256": source_sha256},
    }


def example_keypoints(frames: int, seed: int = 0, batch: int = 2) -> torch.Tensor:
    """Random skeletons ``(batch, frames, 33, 4)`` in the landmarks' ranges, every third frame without a person."""
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(batch, frames, 33, 4, generator=g)
    kp[..., 2] = kp[..., 2] - 0.5
    kp[:, ::3] = 0
    return kp


def export_skeleton(model: nn.Module, ckpt: dict, ckpt_path: Any, out: str | os.PathLike, fmt: str,
                    opts: Any) -> dict[str, Any]:
    """Write the skeleton network of ``ckpt`` to ``out`` (``onnx`` | ``torchscript``); the result dict of
    :func:`dlkdd.deploy.export.export_model` (spec + ``path``, ``bytes``, ``check``)."""
    from dlkdd.deploy.export import FORMATS, _quiet_tracing, check_export
    from dlkdd.utils import atomic_path, atomic_write_text, sha256_file

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose {' or '.join(FORMATS)}")
    if opts.int8:
        raise ExportError(f"{ckpt_path}: --int8 is not offered for a skeleton network (about 50k parameters: "
                          "nothing to gain); export it in fp32")
    model = model.eval().cpu()
    spec = keypoint_spec(ckpt, fmt, ckpt_path, sha256_file(ckpt_path))
    wrapper = _KeypointsToLogits(model).eval()
    example = example_keypoints(max(int(spec["clip"]["frames"]), 4))
    out = Path(out)
    log.info("exporting %s (skeleton %s, %d classes) to %s at input (B,T,33,4)", ckpt_path, spec["arch"]["net"],
             spec["num_classes"], fmt)
    with atomic_path(out, needed=sum(t.numel() * t.element_size() for t in model.state_dict().values())) as tmp:
        with _quiet_tracing():
            try:
                if fmt == "onnx":
                    _onnx(wrapper, example, spec, tmp, opts.opset)
                else:
                    import io

                    with torch.no_grad():
                        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
                    buf = io.BytesIO()
                    torch.jit.save(traced, buf, _extra_files={"dlkdd.json": spec_to_json(spec)})
                    tmp.write_bytes(buf.getbuffer())
            except ExportError:
                raise
            except Exception as e:  # the exporters raise many types; the first line is what matters
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ExportError(f"{ckpt_path}: exporting the skeleton network to {fmt} failed: "
                                  f"{type(e).__name__}: {first[:300]}") from e
        result = dict(spec, path=str(out), bytes=tmp.stat().st_size, check=None)
        if opts.check:
            result["check"] = check_export(tmp, model, example, spec, opts.tol)
    atomic_write_text(sidecar_path(out), spec_to_json(spec) + "\n")
    return result


def _onnx(wrapper: nn.Module, example: torch.Tensor, spec: dict[str, Any], tmp: Path, opset: int) -> None:
    import json

    from torch.export import Dim

    require_export_extra("onnx", "onnxscript", "onnxruntime")
    dyn = ({0: Dim("batch", min=1), 1: Dim("frames", min=2)},)
    prog = torch.onnx.export(wrapper, (example,), dynamo=True, input_names=["keypoints"], output_names=["logits"],
                             dynamic_shapes=dyn, opset_version=opset, verbose=False, external_data=False)
    props = prog.model.metadata_props
    props["dlkdd"] = spec_to_json(spec)
    props["classes"] = json.dumps(spec["classes"])
    props["input"] = json.dumps(spec["input"], sort_keys=True)
    prog.save(tmp, external_data=False)
