"""Write frames to an H.264 MP4 with PyAV.

``write_video(path, frames_uint8 (T,H,W,3) RGB, fps)``: libx264, yuv420p, constant quality
(CRF). yuv420p needs even width and height: an odd side is padded by one replicated row or
column (the frame count never changes). The file is written atomically (temporary file
renamed into place), and the container is always closed.
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from dlkdd.utils import atomic_path

log = logging.getLogger(__name__)

__all__ = ["write_video"]


def _even(frames: np.ndarray) -> np.ndarray:
    t, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 30.0, crf: int = 18,
                codec: str = "libx264") -> Path:
    """Encode ``frames`` (uint8 ``(T,H,W,3)`` RGB, T >= 1) to ``path`` (MP4, H.264).

    ``fps`` may be fractional (stored as an exact fraction). Returns the path.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"write_video expects uint8 frames (T,H,W,3) with T >= 1, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"write_video expects uint8 frames, got {frames.dtype}")
    if not (fps and fps > 0):
        fps = 30.0
    frames = np.ascontiguousarray(_even(frames))
    t, h, w, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)
    path = Path(path)
    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4")
        try:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height = w, h
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for arr in frames:
                frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():  # flush
                container.mux(packet)
        finally:
            container.close()
    log.debug("wrote %s: %d frames %dx%d @ %s fps", path, t, w, h, rate)
    return path
