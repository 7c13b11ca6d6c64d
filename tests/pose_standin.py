"""``python -m tests.pose_standin -m dlkdd pose ...``: the pose environment's ``dlkdd pose`` with a stand-in
for BlazePose, for the demo's test where mediapipe is absent (``DLKDD_POSE_PYTHON`` names a script that runs
this). Everything but the estimator is the real pose stage: decode -> enhancer -> estimator -> pose store.

The stand-in: a person in every frame brighter than mean 1/255, its 33 keypoints a function of the frame's
pixels (deterministic; no skeleton sense)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SHA = "5d" * 32


def stand_in(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``frames (T,H,W,3) uint8`` -> ``(keypoints (T,33,4) float32, mask (T,) bool)``."""
    t = len(frames)
    m = frames.reshape(t, -1).mean(1) / 255.0
    kp = np.zeros((t, 33, 4), np.float32)
    kp[..., 0] = 0.5 + m[:, None] + np.arange(33) * 1e-2
    kp[..., 1] = frames[:, ::8, ::8, 1].reshape(t, -1)[:, :33].astype(np.float32) / 255 + np.arange(33) * 1e-2
    kp[..., 3] = 0.9
    mask = m > 1 / 255
    kp[~mask] = 0
    return kp, mask


def main(argv: list[str]) -> None:
    from dlkdd.pose import blazepose, extract

    blazepose.model_file = lambda: Path(__file__)  # the pose command checks for the model file first
    extract._default_estimator = lambda pose_cfg: (stand_in, SHA)
    if argv[:2] == ["-m", "dlkdd"]:
        argv = argv[2:]
    from dlkdd.cli import main as cli

    sys.argv = ["dlkdd", *argv]
    cli()


if __name__ == "__main__":
    main(sys.argv[1:])
