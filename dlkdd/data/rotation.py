"""Display rotation of a video: which way up a player shows the stored frames.

A phone recording in portrait stores landscape frames plus a display rotation: the MP4
track header's display matrix (FFmpeg's ``AV_PKT_DATA_DISPLAYMATRIX`` side data, attached to
every decoded frame; PyAV reads its angle as ``VideoFrame.rotation``, counter-clockwise
degrees in ``[-180, 180]``) or, in files from old muxers read by old FFmpeg builds, the
stream tag ``rotate`` (clockwise degrees, e.g. ``"90"`` for a portrait clip). A player turns
the stored frame counter-clockwise by the matrix angle (FFmpeg's ``-autorotate``; ISO/IEC
14496-12 ``tkhd`` matrix).

* :func:`display_rotation` -> ``int`` in ``{0, 90, 180, 270}``, counter-clockwise degrees.
* :func:`upright` ``(H,W,C)`` or ``(T,H,W,C)`` array -> the same array turned by that angle,
  ``(W,H,C)`` for 90/270; ``np.rot90`` turns the image counter-clockwise as displayed
  (row 0 at the top). A rotation of 0 returns the input unchanged (no copy).

Only quarter turns are applied; another angle is rounded to the nearest quarter turn with
a warning, and mirror flips in the matrix are not applied.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["display_rotation", "upright"]


def display_rotation(matrix_ccw: float, rotate_tag: str | None = None, path: str = "") -> int:
    """The counter-clockwise quarter-turn angle (0/90/180/270) to display a stream upright.

    ``matrix_ccw``: the display matrix angle (counter-clockwise degrees, 0 when absent);
    ``rotate_tag``: the legacy ``rotate`` stream tag (clockwise degrees), used only when the
    matrix gives no rotation. An unparsable tag is ignored.
    """
    ccw = float(matrix_ccw or 0.0)
    if ccw == 0.0 and rotate_tag not in (None, ""):
        try:
            ccw = -float(str(rotate_tag).strip())
        except ValueError:
            log.warning("%s: ignoring unreadable rotate tag %r", path, rotate_tag)
            ccw = 0.0
    quarter = int(round(ccw / 90.0))
    if abs(ccw - 90.0 * quarter) > 1.0:
        log.warning("%s: display rotation %.1f degrees is not a quarter turn; using %d", path, ccw,
                    (90 * quarter) % 360)
    return (90 * quarter) % 360


def upright(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Turn ``frames`` ((H,W,C) or (T,H,W,C)) counter-clockwise by ``rotation`` degrees."""
    k = (int(rotation) // 90) % 4
    if k == 0:
        return frames
    axes = (0, 1) if frames.ndim == 3 else (1, 2)
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=axes))
