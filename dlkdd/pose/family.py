"""The pose family, :data:`POSE`: the entry ``"pose"`` of :data:`dlkdd.models.families.FAMILIES`.

A :class:`~dlkdd.models.family.Family` whose models are skeleton networks (:mod:`dlkdd.pose.skeleton`,
keypoints ``(B, T, 33, 4)`` -> logits ``(B, C)``) and whose input is windows of pose stores, never video:

- ``teacher_arch`` / ``student_arch``: the skeleton network, the enhancer its keypoints came from (the
  ``enhancer`` section for the teacher, ``pose.student_enhancer`` for a student or baseline) and the pose
  sampling; ``from_arch``: :func:`~dlkdd.pose.skeleton.skeleton_from_arch`;
- ``prepare_data``: the lists as listed (the pose stage decoded and checked every clip once);
- ``dataset(cfg, manifest, policy, kind)``: :class:`~dlkdd.pose.dataset.PoseDataset` on the pose store of
  ``manifest`` with the enhancer of ``kind``, the view policy translated to windows of stored rows
  (random -> :class:`~dlkdd.pose.dataset.RandomWindow`, centre -> :class:`~dlkdd.pose.dataset.CenterWindow`,
  cache -> :class:`~dlkdd.pose.dataset.CacheWindows`; stored views replay as they are);
- the objectives are the DL-KDD ones (CE; ``cfg.kd``'s CE + alpha_t KL);
- its own flows for what differs: ``own_logit_cache`` (K windows per clip keyed by the windows,
  :func:`dlkdd.pose.stages.precompute_logits`), ``own_evaluation`` (a new list is posed first,
  :func:`dlkdd.pose.stages.evaluate_checkpoint`), ``own_predictions`` (new videos posed as the training data
  was, then windows scored: :func:`dlkdd.pose.infer.predict_pose_videos`) and ``own_export`` (the skeleton
  network with a keypoint input: :func:`dlkdd.pose.export.export_skeleton`); ``no_video_reason``: pre-training
  (video students only) refuses the family.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

from dlkdd.models.family import Family
from dlkdd.pose.skeleton import SkeletonNet, skeleton_from_arch

__all__ = ["PoseFamily", "POSE"]


class PoseFamily(Family):
    """See the module docstring."""

    name = "pose"
    no_video_reason = ("a pose checkpoint (skeleton network on BlazePose keypoints) takes keypoints from the pose "
                       "stage (mediapipe), not video clips")

    # -- models
    def teacher_arch(self, cfg: Any, num_classes: int) -> dict[str, Any]:
        from dlkdd.pose.stages import pose_arch

        return pose_arch(cfg, num_classes, cfg.enhancer.kind)

    def build_teacher(self, cfg: Any, num_classes: int) -> nn.Module:
        return SkeletonNet(num_classes, cfg.pose.net, cfg.pose.width, cfg.pose.dropout)

    def student_arch(self, cfg: Any, num_classes: int) -> dict[str, Any]:
        from dlkdd.pose.stages import pose_arch

        return pose_arch(cfg, num_classes, cfg.pose.student_enhancer)

    def build_student(self, cfg: Any, num_classes: int) -> nn.Module:
        return self.build_teacher(cfg, num_classes)

    def from_arch(self, arch: Mapping[str, Any], state: Mapping[str, Any]) -> nn.Module:
        return skeleton_from_arch(dict(arch))

    # -- data
    def prepare_data(self, cfg: Any, need_test: bool = True, progress: bool = True, scan: bool = True) -> Any:
        """The train (and test) lists as listed: no clip is opened (the pose stage decoded each one once)."""
        from dlkdd.data.formats import data_format
        from dlkdd.data.manifest import manifest_from_config
        from dlkdd.data.prepare import PreparedData

        train = manifest_from_config(cfg.data, "train", check_files=False)
        has_test = need_test and data_format(cfg.data.format).has_split(cfg.data, "test")
        test = manifest_from_config(cfg.data, "test", check_files=False) if has_test else None
        return PreparedData(train, test, [], [])

    def dataset(self, cfg: Any, manifest: Any, policy: Any, kind: str = "teacher") -> Any:
        """Windows of the pose store of ``manifest``; the teacher's poses are of ``enhancer``-enhanced
        frames, a student's or baseline's of ``pose.student_enhancer`` frames."""
        from dlkdd.data.views import CacheViews, CenterView, RandomView, StoredView
        from dlkdd.pose.dataset import CacheWindows, CenterWindow, PoseDataset, RandomWindow
        from dlkdd.pose.stages import check_stored_windows, find_poses

        enh = cfg.enhancer.kind if kind == "teacher" else cfg.pose.student_enhancer
        poses = find_poses(cfg, manifest, enh, "test" if isinstance(policy, CenterView) else "train")
        if isinstance(policy, RandomView):
            policy = RandomWindow(cfg.clip, poses.stride, seed=policy.seed)
        elif isinstance(policy, CenterView):
            policy = CenterWindow(cfg.clip, poses.stride)
        elif isinstance(policy, CacheViews):
            policy = CacheWindows(cfg.clip, poses.stride, policy.k, seed=policy.seed)
        elif isinstance(policy, StoredView):
            check_stored_windows(policy.rows, poses)
        return PoseDataset(manifest, poses, cfg.clip, policy)

    # -- what a logit store records
    def feature_dim(self, arch: Mapping[str, Any]) -> int:
        """0: the skeleton network caches no features."""
        return 0

    # -- the flows that differ
    def own_logit_cache(self, cfg: Any, teacher_path: Any, out: Any, views: int, fmt: str, progress: bool,
                        overwrite: bool) -> Path:
        """The teacher's logits for ``views`` windows per training clip
        (:func:`dlkdd.pose.stages.precompute_logits`)."""
        from dlkdd.pose.stages import precompute_logits
        from dlkdd.train.checkpoint import load_checkpoint

        return precompute_logits(cfg, Path(teacher_path), load_checkpoint(teacher_path), out, views, fmt, progress,
                                 overwrite)

    def own_evaluation(self, ckpt: dict, ckpt_path: Any, manifest: Any, device: Any, opts: Any) -> dict[str, Any]:
        """Scores on ``manifest``'s poses, posing it first where no store holds it
        (:func:`dlkdd.pose.stages.evaluate_checkpoint`)."""
        from dlkdd.pose.stages import evaluate_checkpoint

        return evaluate_checkpoint(ckpt, ckpt_path, manifest, device, opts.clips, opts.progress)

    def own_predictions(self, model: Any, ckpt: dict, paths: Any, device: Any, opts: Any) -> list:
        """The videos posed as the checkpoint's training data was, then windows scored
        (:func:`dlkdd.pose.infer.predict_pose_videos`)."""
        from dlkdd.pose.infer import predict_pose_videos

        return predict_pose_videos(model, ckpt, paths, device, opts)

    def own_export(self, model: Any, ckpt: dict, ckpt_path: Any, out: Any, fmt: str, opts: Any) -> dict[str, Any]:
        """The skeleton network, ``keypoints (B,T,33,4) -> logits`` (:func:`dlkdd.pose.export.export_skeleton`)."""
        from dlkdd.pose.export import export_skeleton

        return export_skeleton(model, ckpt, ckpt_path, out, fmt, opts)


POSE = PoseFamily()
