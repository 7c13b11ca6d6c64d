"""The one "weights do not fit" report: which keys of a state dict are missing, unexpected or
mis-shaped against a model's own. Used wherever weights are loaded from a file: published
R(2+1)D weights (:func:`dlkdd.models.r2plus1d.load_pretrained`), dlkdd checkpoints
(:func:`dlkdd.models.build.model_from_checkpoint`), resumed runs
(:func:`dlkdd.train.checkpoint.resume_state`) and enhancer state dicts.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["weights_mismatch"]


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def weights_mismatch(own: Mapping[str, Any], theirs: Mapping[str, Any], optional: Iterable[str] = ()) -> str:
    """``"2 missing: a, b; 1 unexpected: c; 1 mis-shaped: d (3, 4) vs model (3, 5)"``, or ``""`` when
    ``theirs`` fits ``own`` exactly. Keys in ``optional`` may be absent from ``theirs``."""
    optional = set(optional)
    missing = [k for k in own if k not in theirs and k not in optional]
    unexpected = [k for k in theirs if k not in own]
    misshaped = [f"{k} {tuple(theirs[k].shape)} vs model {tuple(own[k].shape)}" for k in own
                 if k in theirs and hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {_few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_few(unexpected)}")
    if misshaped:
        parts.append(f"{len(misshaped)} mis-shaped: {_few(misshaped, 3)}")
    return "; ".join(parts)
