"""Build models from configs and rebuild them from self-contained checkpoints.

A checkpoint's ``arch`` is :func:`dlkdd.models.classifier.arch_dict` (backbone, head,
``num_classes``, normalisation, dropouts) plus ``family`` (a name of
:data:`dlkdd.models.families.FAMILIES`) and what that family adds (the DL-KDD teacher's
``enhancer``: :func:`dlkdd.models.enhancers.enhancer_spec`, ``None`` for a student). These
functions ask the family table: ``model.teacher`` names the family of a run, ``arch["family"]`` the
family that rebuilds a checkpoint.

The weights (``ckpt["model"]``) are the whole model's state dict, enhancer included, so
``evaluate`` / ``predict`` / ``cache-logits`` need nothing but the checkpoint file.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from dlkdd.errors import CheckpointError
from dlkdd.models.families import family, family_of_arch
from dlkdd.models.weights import nonfinite_weights, weights_mismatch

__all__ = ["teacher_arch", "student_arch", "build_teacher", "build_student", "model_from_checkpoint"]


def student_arch(cfg: Any, num_classes: int) -> dict[str, Any]:
    """``arch`` of a student / baseline of ``cfg.model.teacher``'s family (DL-KDD: the classifier)."""
    return family(cfg.model.teacher).student_arch(cfg, num_classes)


def teacher_arch(cfg: Any, num_classes: int) -> dict[str, Any]:
    """``arch`` of the teacher of ``cfg.model.teacher``'s family."""
    return family(cfg.model.teacher).teacher_arch(cfg, num_classes)


def build_student(cfg: Any, num_classes: int) -> nn.Module:
    """The student of ``cfg.model.teacher``'s family (DL-KDD: R(2+1)D-BERT on dark clips; ``model.pretrained``
    initialises the trunk)."""
    return family(cfg.model.teacher).build_student(cfg, num_classes)


def build_teacher(cfg: Any, num_classes: int) -> nn.Module:
    """The teacher of ``cfg.model.teacher``'s family (DL-KDD: frozen enhancer -> classifier)."""
    return family(cfg.model.teacher).build_teacher(cfg, num_classes)


def model_from_checkpoint(ckpt: Mapping[str, Any], path: str = "checkpoint") -> nn.Module:
    """Rebuild the model stored in a dlkdd checkpoint (teacher, student, baseline...), in eval mode."""
    arch = ckpt.get("arch")
    state = ckpt.get("model")
    if not isinstance(arch, Mapping) or not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: not a dlkdd model checkpoint (no 'arch'/'model'); "
                              "expected a teacher.pt / student.pt written by dlkdd")
    model = family_of_arch(arch).from_arch(arch, state)
    report = weights_mismatch(model.state_dict(), state)
    if report:
        raise CheckpointError(f"{path}: weights do not fit the architecture it declares "
                              f"({arch.get('backbone')}, {arch.get('num_classes')} classes): {report}")
    bad = nonfinite_weights(state)
    if bad:
        raise CheckpointError(f"{path}: non-finite weights ({bad}); the run that wrote it diverged or the file is "
                              f"damaged: use an earlier checkpoint (e.g. best.pt) or retrain")
    model.load_state_dict(dict(state))
    return model.eval()
