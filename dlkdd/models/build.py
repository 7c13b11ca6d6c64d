"""Build models from configs and rebuild them from self-contained checkpoints.

A checkpoint's ``arch`` is :func:`dlkdd.models.classifier.arch_dict` (backbone, head,
``num_classes``, normalisation, dropouts) plus

- ``family``: ``"dlkdd"`` (enhancer -> classifier) or ``"actlumos"`` (dual-stream fusion teacher);
- ``enhancer``: :func:`dlkdd.models.enhancers.enhancer_spec` for a teacher, ``None`` for a
  student (a student never has an enhancer);
- ``actlumos``: the ActLumos settings (fusion, projection size) for that family.

The weights (``ckpt["model"]``) are the whole model's state dict, enhancer included, so
``evaluate`` / ``predict`` / ``cache-logits`` need nothing but the checkpoint file.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from torch import nn

from dlkdd.errors import CheckpointError
from dlkdd.models.actlumos import actlumos_arch, actlumos_from_arch, build_actlumos_teacher
from dlkdd.models.classifier import Classifier, Teacher, arch_dict, build_classifier, classifier_from_arch
from dlkdd.models.enhancers import build_enhancer, enhancer_from_spec, enhancer_spec
from dlkdd.models.weights import nonfinite_weights, weights_mismatch

__all__ = ["teacher_arch", "student_arch", "build_teacher", "build_student", "model_from_checkpoint"]


def _teacher_model_cfg(cfg: Any) -> Any:
    """The teacher's classifier settings: the student's, with the teacher's own normalisation."""
    return dataclasses.replace(cfg.model, normalize=cfg.model.teacher_normalize)


def student_arch(cfg: Any, num_classes: int) -> dict[str, Any]:
    """``arch`` of a student / baseline classifier (no enhancer)."""
    return dict(arch_dict(cfg.model, num_classes), family="dlkdd", enhancer=None)


def teacher_arch(cfg: Any, num_classes: int) -> dict[str, Any]:
    """``arch`` of the teacher of ``cfg.model.teacher`` (dlkdd: enhancer + classifier; actlumos)."""
    if cfg.model.teacher == "actlumos":
        return actlumos_arch(cfg, num_classes)
    return dict(arch_dict(_teacher_model_cfg(cfg), num_classes), family="dlkdd", enhancer=enhancer_spec(cfg.enhancer))


def build_student(cfg: Any, num_classes: int) -> Classifier:
    """The student: R(2+1)D-BERT on dark clips (``model.pretrained`` initialises the trunk)."""
    return build_classifier(cfg.model, num_classes)


def build_teacher(cfg: Any, num_classes: int) -> nn.Module:
    """The teacher of ``cfg.model.teacher``: frozen enhancer -> classifier, or ActLumos."""
    if cfg.model.teacher == "actlumos":
        return build_actlumos_teacher(cfg, num_classes)
    return Teacher(build_enhancer(cfg.enhancer), build_classifier(_teacher_model_cfg(cfg), num_classes))


def _sub_state(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def model_from_checkpoint(ckpt: Mapping[str, Any], path: str = "checkpoint") -> nn.Module:
    """Rebuild the model stored in a dlkdd checkpoint (teacher, student, baseline...), in eval mode."""
    arch = ckpt.get("arch")
    state = ckpt.get("model")
    if not isinstance(arch, Mapping) or not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: not a dlkdd model checkpoint (no 'arch'/'model'); "
                              "expected a teacher.pt / student.pt written by dlkdd")
    family = arch.get("family", "dlkdd")
    if family == "actlumos":
        model = actlumos_from_arch(arch)
    elif family == "pose":  # pose family (issue 22): the skeleton network -> dlkdd.pose.family
        from dlkdd.pose.family import POSE

        model = POSE.from_arch(arch)
    elif arch.get("enhancer"):
        enh = enhancer_from_spec(arch["enhancer"], _sub_state(state, "enhancer.") or None
                                 if arch["enhancer"].get("kind") == "zerodce" else None)
        model = Teacher(enh, classifier_from_arch(arch))
    else:
        model = classifier_from_arch(arch)
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
