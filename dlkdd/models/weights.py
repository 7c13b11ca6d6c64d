"""The one "weights do not fit" report: which keys of a state dict are missing, unexpected or
mis-shaped against a model's own. Used wherever weights are loaded from a file: published
R(2+1)D weights (:func:`dlkdd.models.r2plus1d.load_pretrained`), dlkdd checkpoints
(:func:`dlkdd.models.build.model_from_checkpoint`), resumed runs
(:func:`dlkdd.train.checkpoint.resume_state`) and enhancer state dicts.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["weights_mismatch", "nonfinite_weights", "load_error_reason"]


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


def nonfinite_weights(state: Mapping[str, Any]) -> str:
    """``"3 tensors hold NaN/inf: classifier.fc.weight, ..."``, or ``""`` when every floating-point
    tensor of ``state`` is finite. A model with such weights outputs NaN for every input (a
    diverged or damaged checkpoint): refused on load rather than scored as class 0."""
    import torch

    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    return f"{len(bad)} tensor(s) hold NaN/inf: {_few(bad)}" if bad else ""


def load_error_reason(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line, without torch's advice to
    retry with ``weights_only=False`` (which would run the file's code: never the fix for a file
    of unknown origin). A pickle that references code names the code it asked for."""
    import re

    text = str(err)
    if "Weights only load failed" in text or "nsupported global" in text or "GLOBAL" in text:
        names = re.findall(r"GLOBAL ([\w.]+)", text)
        what = f" (it asks for {names[0]})" if names else ""
        return (f"it holds objects that cannot be loaded safely{what}: a pickle that would run code, not only "
                f"tensors; it was not loaded")
    first = text.strip().splitlines()[0][:200] if text.strip() else "no detail"
    return f"{type(err).__name__}: {first}"
