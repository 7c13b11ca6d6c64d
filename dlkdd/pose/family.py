"""The pose family in one object, :data:`POSE`: what every stage asks about it.

The stages dispatch on ``model.teacher == "pose"`` (or a checkpoint's ``arch["family"] == "pose"``) to
this object; nothing else in dlkdd knows the family. Its parts:

- ``arch(cfg, num_classes, enhancer_kind)`` / ``build(cfg, num_classes)`` / ``from_arch(arch)``: the skeleton
  network (:mod:`dlkdd.pose.skeleton`) and the checkpoint's description of it (with the enhancer and the
  pose sampling its keypoints came from);
- ``teacher_objective`` / ``student_objective(cfg)``: cross-entropy; CE + alpha_t KL (:mod:`dlkdd.train.objectives`);
- ``dataset``: :class:`dlkdd.pose.dataset.PoseDataset` (input: windows of a pose store, never video);
- ``store_meta``: the keys a pose-teacher logit store carries (``family: pose``, ``pose_spec``, ...);
- the stages: ``train_teacher``, ``precompute_logits``, ``train_student``, ``evaluate_checkpoint``
  (:mod:`dlkdd.pose.stages`); the pose stage itself runs in the pose environment (``dlkdd pose``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from dlkdd.pose import stages
from dlkdd.pose.dataset import PoseDataset
from dlkdd.pose.skeleton import SkeletonNet, skeleton_from_arch
from dlkdd.train.objectives import CrossEntropyObjective, DistillationObjective

__all__ = ["PoseFamily", "POSE"]


def _build(cfg: Any, num_classes: int) -> SkeletonNet:
    return SkeletonNet(num_classes, cfg.pose.net, cfg.pose.width, cfg.pose.dropout)


def _student_objective(cfg: Any) -> DistillationObjective:
    return DistillationObjective(cfg.kd.alpha, cfg.kd.gamma, cfg.kd.tau, cfg.kd.tau2_scale)


@dataclass(frozen=True)
class PoseFamily:
    name: str
    arch: Callable
    build: Callable
    from_arch: Callable
    teacher_objective: Callable
    student_objective: Callable
    dataset: type
    store_meta: tuple
    train_teacher: Callable
    precompute_logits: Callable
    train_student: Callable
    evaluate_checkpoint: Callable


POSE = PoseFamily(
    name="pose",
    arch=stages.pose_arch,
    build=_build,
    from_arch=skeleton_from_arch,
    teacher_objective=CrossEntropyObjective,
    student_objective=_student_objective,
    dataset=PoseDataset,
    store_meta=("family", "teacher_sha256", "teacher_enhancer", "manifest_sha256", "classes", "pose_store", "pose_spec",
                "view_seed", "windows"),
    train_teacher=stages.train_teacher,
    precompute_logits=stages.precompute_logits,
    train_student=stages.train_student,
    evaluate_checkpoint=stages.evaluate_checkpoint,
)
