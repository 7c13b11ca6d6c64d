"""A model family: everything a stage (teacher, cache-logits, student) needs to know of a kind of model.

:class:`Family` is the protocol, with the DL-KDD defaults; :class:`DlkddFamily` is the DL-KDD
family itself (frozen enhancer -> classifier teacher, classifier student). Other families subclass
it and override what differs (ActLumos: :class:`dlkdd.models.actlumos.ActLumosFamily`). The table
of families is :data:`dlkdd.models.families.FAMILIES`; ``model.teacher`` names the family of a run,
a checkpoint's ``arch["family"]`` the family that rebuilds it.

What a family decides:

- the model and its checkpoint ``arch``: ``teacher_arch`` / ``build_teacher``, ``student_arch`` /
  ``build_student`` (``cfg``, ``num_classes``) and ``from_arch(arch, state)`` (an untrained model of
  ``arch``; ``state`` is the checkpoint's state dict, for parts rebuilt from their own weights);
- the objective of each stage: ``objective(cfg, kind)``, ``kind`` teacher | student | baseline
  (:mod:`dlkdd.train.objectives`);
- the input of each stage: ``dataset(cfg, manifest, policy)``, the dataset whose samples the
  model takes (here :class:`dlkdd.data.dataset.ClipDataset`: decoded video clips cut by ``policy``,
  a :mod:`dlkdd.data.views` policy); a family whose input is not decoded video (keypoint sequences
  from a pose store) returns its own dataset with the same sample keys (``video``, ``label``, ...);
- the lists a stage trains on: ``prepare_data(cfg, need_test, progress, scan)`` (here
  :func:`dlkdd.data.prepare.prepare_data`: every clip scanned; a family that never decodes video, such
  as the pose family reading pose stores, returns the lists as listed); ``dataset``'s ``kind`` (teacher |
  student | baseline) says whose input it is (the pose family: the enhanced or the dark frames' poses);
- what a logit store records of the teacher: ``feature_dim(arch)`` (width of the cached
  ``return_features`` output) and ``enhancer_label(arch)`` (``teacher_enhancer`` in the store's metadata);
- the flows a family runs itself because its input is not decoded video (None: the common stage):
  ``own_logit_cache(...)`` (cache-logits), ``own_evaluation(...)`` (``dlkdd evaluate``),
  ``own_predictions(...)`` (``dlkdd predict``: new videos through the family's own input, e.g. posed first)
  and ``own_export(...)`` (``dlkdd export``: a model whose input is not a video clip);
  ``no_video_reason`` ("" = its checkpoints take video clips): what its models take instead.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from torch import nn

from dlkdd.models.backbones import backbone_spec
from dlkdd.models.classifier import Teacher, arch_dict, build_classifier, classifier_from_arch
from dlkdd.models.enhancers import build_enhancer, enhancer_from_spec, enhancer_spec

__all__ = ["Family", "DlkddFamily"]


def _sub_state(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class Family:
    """The protocol of a family (see the module docstring), with the DL-KDD student and data defaults."""

    name = ""

    # -- models
    def teacher_arch(self, cfg: Any, num_classes: int) -> dict[str, Any]:
        raise NotImplementedError

    def build_teacher(self, cfg: Any, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def from_arch(self, arch: Mapping[str, Any], state: Mapping[str, Any]) -> nn.Module:
        raise NotImplementedError

    def student_arch(self, cfg: Any, num_classes: int) -> dict[str, Any]:
        """A student / baseline classifier (no enhancer; rebuilt by the ``dlkdd`` family)."""
        return dict(arch_dict(cfg.model, num_classes), family="dlkdd", enhancer=None)

    def build_student(self, cfg: Any, num_classes: int) -> nn.Module:
        return build_classifier(cfg.model, num_classes)

    # -- training
    def objective(self, cfg: Any, kind: str) -> Any:
        """CE for a teacher and a baseline; ``cfg.kd``'s distillation objective for a student."""
        from dlkdd.train.objectives import CrossEntropyObjective, build_objective

        return build_objective(cfg.kd) if kind == "student" else CrossEntropyObjective()

    def prepare_data(self, cfg: Any, need_test: bool = True, progress: bool = True, scan: bool = True) -> Any:
        """The lists of ``cfg.data`` with their bad clips handled: :func:`dlkdd.data.prepare.prepare_data`."""
        from dlkdd.data.prepare import prepare_data

        return prepare_data(cfg, need_test=need_test, progress=progress, scan=scan)

    def dataset(self, cfg: Any, manifest: Any, policy: Any, kind: str = "teacher") -> Any:
        """Decoded video clips of ``manifest`` cut by the view ``policy`` (the same for every ``kind``)."""
        from dlkdd.data.dataset import ClipDataset

        return ClipDataset(manifest, cfg.clip, policy)

    # -- what a logit store records
    def feature_dim(self, arch: Mapping[str, Any]) -> int:
        """Width of ``model(x, return_features=True)[1]``: the trunk's ``feature_dim``."""
        return backbone_spec(arch.get("backbone", "r2plus1d_18")).feature_dim

    def enhancer_label(self, arch: Mapping[str, Any]) -> str | None:
        """The teacher's enhancer kind (``arch["enhancer"]["kind"]``), None without one."""
        enh = arch.get("enhancer")
        return enh.get("kind") if isinstance(enh, Mapping) else None

    # -- the flows a family whose input is not decoded video runs itself
    #: why ``dlkdd export`` and ``dlkdd predict`` refuse this family's checkpoints ("": they take video clips)
    no_video_reason = ""

    def own_logit_cache(self, cfg: Any, teacher_path: Any, out: Any, views: int, fmt: str, progress: bool,
                        overwrite: bool) -> Any:
        """The logit store's path when the family computes it itself; None: the common cache-logits stage."""
        return None

    def own_evaluation(self, ckpt: dict, ckpt_path: Any, manifest: Any, device: Any, opts: Any) -> Any:
        """The metrics when the family scores ``manifest`` itself; None: the common evaluation of decoded clips."""
        return None

    def own_predictions(self, model: Any, ckpt: dict, paths: Any, device: Any, opts: Any) -> Any:
        """Per video of ``paths`` the result dict of :func:`dlkdd.pipeline.evaluate.predict_video` (or the
        :class:`~dlkdd.errors.DlkddError` that kept it from being scored) when the family predicts itself;
        None: the common prediction from decoded clips."""
        return None

    def own_export(self, model: Any, ckpt: dict, ckpt_path: Any, out: Any, fmt: str, opts: Any) -> Any:
        """The export's result dict when the family exports its model itself (its input is not a video
        clip); None: the common export of ``clip (B,3,T,S,S) -> logits``."""
        return None


class DlkddFamily(Family):
    """DL-KDD (Chang, Chen & Tseng): teacher = frozen enhancer -> classifier (``model.teacher_normalize``),
    student = the classifier on dark clips. Checkpoint ``arch``: :func:`dlkdd.models.classifier.arch_dict`
    plus ``family: "dlkdd"`` and ``enhancer`` (:func:`dlkdd.models.enhancers.enhancer_spec`, None for a student)."""

    name = "dlkdd"

    def teacher_arch(self, cfg: Any, num_classes: int) -> dict[str, Any]:
        return dict(arch_dict(self._teacher_model_cfg(cfg), num_classes), family=self.name,
                    enhancer=enhancer_spec(cfg.enhancer))

    def build_teacher(self, cfg: Any, num_classes: int) -> nn.Module:
        return Teacher(build_enhancer(cfg.enhancer), build_classifier(self._teacher_model_cfg(cfg), num_classes))

    def from_arch(self, arch: Mapping[str, Any], state: Mapping[str, Any]) -> nn.Module:
        spec = arch.get("enhancer")
        if not spec:
            return classifier_from_arch(arch)
        weights = (_sub_state(state, "enhancer.") or None) if spec.get("kind") == "zerodce" else None
        return Teacher(enhancer_from_spec(spec, weights), classifier_from_arch(arch))

    @staticmethod
    def _teacher_model_cfg(cfg: Any) -> Any:
        """The teacher's classifier settings: the student's, with the teacher's own normalisation."""
        return dataclasses.replace(cfg.model, normalize=cfg.model.teacher_normalize)

