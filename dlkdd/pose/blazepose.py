"""MediaPipe BlazePose "full" on frames: uint8 ``(T,H,W,3)`` RGB -> keypoints ``(T,33,4)`` float32
(x, y normalised to the frame, z relative to the hips at about the scale of x, visibility in [0,1])
and mask ``(T,)`` bool (False, and zero keypoints, where no person is found).

BlazePose (Bazarevsky et al., "BlazePose: On-device Real-time Body Pose tracking", CVPRW 2020): a
person detector, then a landmark model on the detected region; in video mode
(``static_image_mode=False``) the landmarks of one frame give the next frame's region, and the
detector reruns only when tracking is lost. The "full" landmark model
(``mediapipe/modules/pose_landmark/pose_landmark_full.tflite``, ``model_complexity=1``) is the only
one shipped inside the ``mediapipe`` wheel (lite and heavy download at run time, which dlkdd never
does). This module is the only one that imports ``mediapipe``: it runs in the pose environment
(``make pose-env``), and nothing after the pose store needs it.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from dlkdd.errors import DlkddError

__all__ = ["PoseEnvError", "NUM_JOINTS", "model_file", "model_sha256", "BlazePose"]

NUM_JOINTS = 33
MODEL_RELPATH = "modules/pose_landmark/pose_landmark_full.tflite"
POSE_ENV_HINT = "make pose-env (then .venv-pose/bin/dlkdd pose ...)"


class PoseEnvError(DlkddError):
    """mediapipe is not importable here: the pose stage runs in the pose environment."""


def _mediapipe():
    try:
        import mediapipe as mp  # noqa: PLC0415 - only the pose stage needs it
    except ImportError:
        raise PoseEnvError(f"the pose stage needs mediapipe, which this environment lacks (it cannot share the main "
                           f"one: it pins protobuf<5); create the pose environment with `{POSE_ENV_HINT}`") from None
    return mp


def model_file() -> Path:
    """The BlazePose full landmark model inside the installed mediapipe package (found without importing it)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        _mediapipe()  # raises PoseEnvError
    p = Path(list(spec.submodule_search_locations)[0]) / MODEL_RELPATH
    if not p.is_file():
        raise PoseEnvError(f"{p}: the BlazePose full model is missing from the mediapipe package; reinstall it with "
                           f"`{POSE_ENV_HINT}`")
    return p


def model_sha256() -> str:
    """sha256 of the landmark model file: part of every pose store's address."""
    return hashlib.sha256(model_file().read_bytes()).hexdigest()


class BlazePose:
    """One BlazePose graph; ``video=True`` tracks across the frames of one call (reset per clip)."""

    def __init__(self, video: bool = True, min_detection: float = 0.5, min_tracking: float = 0.5):
        self.video, self.min_detection, self.min_tracking = bool(video), float(min_detection), float(min_tracking)
        self._mp = _mediapipe()
        self._graph = None

    def _new_graph(self):
        if self._graph is not None:
            self._graph.close()
        self._graph = self._mp.solutions.pose.Pose(
            static_image_mode=not self.video, model_complexity=1, smooth_landmarks=self.video,
            enable_segmentation=False, min_detection_confidence=self.min_detection,
            min_tracking_confidence=self.min_tracking)
        return self._graph

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints ``(T,33,4)`` float32 and mask ``(T,)`` of one clip's frames (uint8 ``(T,H,W,3)`` RGB)."""
        graph = self._new_graph() if (self.video or self._graph is None) else self._graph
        t = len(frames)
        kp = np.zeros((t, NUM_JOINTS, 4), np.float32)
        mask = np.zeros((t,), bool)
        for i in range(t):
            res = graph.process(np.ascontiguousarray(frames[i]))
            if res.pose_landmarks is None:
                continue
            kp[i] = [(p.x, p.y, p.z, p.visibility) for p in res.pose_landmarks.landmark]
            mask[i] = True
        return kp, mask

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
