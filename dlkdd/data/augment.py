"""Photometric jitter of training clips: ``video (3,T,S,S)`` float in [0,1] -> the same shape.

With strength ``s = clip.jitter`` > 0, each training clip gets, from its own generator
(:func:`jitter_rng` ``(seed, epoch, index, stream)``, independent of the view's):

* gain ``g = exp(U[-s, s])`` (brightness, multiplicative: light level in dark video scales the signal),
* per-channel gains ``exp(U[-s/4, s/4])`` (white balance / sensor tint),
* contrast ``c = exp(U[-s/2, s/2])`` about the clip's mean intensity,
* gamma ``exp(U[-s/2, s/2])`` on the result,

then clipping to [0,1]: ``y = clip((c * (g * g_ch * x - m) + m) ** gamma)`` where ``m`` is the mean of
``g * g_ch * x``. The same factors apply to every frame of the clip (a per-clip jitter, as in the
colour jitter of TSN / SlowFast training recipes), so the motion between frames is unchanged.
At ``s = 0`` nothing is drawn and the clip is returned as is.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["jitter_rng", "photometric_jitter"]


def jitter_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    """The jitter generator of sample ``index`` at ``epoch`` (``stream``: 0 for ``video``, 1 for ``video2``)."""
    return np.random.default_rng((int(seed), int(epoch), int(index), 7919, int(stream)))


def photometric_jitter(video: torch.Tensor, rng: np.random.Generator, strength: float) -> torch.Tensor:
    """``video`` (3,T,H,W) in [0,1] jittered as the module docstring says (a new tensor)."""
    s = float(strength)
    if s <= 0:
        return video
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"photometric_jitter expects (3,T,H,W), got {tuple(video.shape)}")
    gain = math.exp(rng.uniform(-s, s))
    ch = torch.tensor(np.exp(rng.uniform(-s / 4, s / 4, size=3)), dtype=video.dtype).view(3, 1, 1, 1)
    contrast = math.exp(rng.uniform(-s / 2, s / 2))
    gamma = math.exp(rng.uniform(-s / 2, s / 2))
    x = video * (gain * ch)
    m = x.mean()
    x = (contrast * (x - m) + m).clamp_(0.0, 1.0)
    return x.pow_(gamma)
