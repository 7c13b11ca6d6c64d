"""Procedurally generated motion videos for pre-training (``dlkdd pretrain --set pretrain.task=motion``).

Nothing is downloaded: every clip is drawn on the fly from ``(seed, epoch, index)``, so an epoch is
reproducible whichever worker renders it and every epoch brings new clips. Synthetic videos of
moving shapes have been reported to pre-train video networks that transfer to real action
recognition (e.g. Kataoka et al., "Spatiotemporal initialization for 3D CNNs with generated
motion patterns", WACV 2022; Zhong et al., "Learning video representations from procedural
programs", 2023); here the point is a trunk that must look at *motion* (the classes differ only in
how things move, never in how they look), on clips as dark as ARID's.

A clip ``video``: float32 ``(3, T, S, S)`` in [0,1] (``T`` = ``clip.frames``, ``S`` = ``clip.size``).
It shows 1-3 shapes (ellipses, bars, rectangles; random size, position and colour, brighter than
the background) over a smooth random background, all shapes doing the clip's motion (random speed), with a slight random camera
drift, then made dark like ARID: a gain ``U[0.1, 0.6]``, a gamma ``U[1.2, 2.2]`` and Gaussian
sensor noise ``sigma ~ U[0.005, 0.03]`` per pixel and frame. The label is the motion:

====  ==============  =========================================
 0    right            centres move +x
 1    left             centres move -x
 2    down             centres move +y
 3    up               centres move -y
 4    clockwise        shapes rotate about their centres, angle +
 5    anticlockwise    angle -
 6    grow             sizes scale up over the clip
 7    shrink           sizes scale down
====  ==============  =========================================

:class:`MotionClips` is a dataset of ``length`` such clips: item ``i`` is ``{"video", "label",
"key": "motion-<i>", "index": i}`` (``fixed=True``: the same clip at every epoch, for validation).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["MOTIONS", "MotionClips", "render_motion"]

MOTIONS = ("right", "left", "down", "up", "clockwise", "anticlockwise", "grow", "shrink")


def _background(rng: np.random.Generator, size: int) -> torch.Tensor:
    """A smooth random colour field (3,S,S) in [0, 0.45] (darker than every shape): a 4x4 random grid
    upsampled bilinearly."""
    grid = torch.from_numpy(rng.uniform(0.05, 0.45, size=(1, 3, 4, 4)).astype(np.float32))
    bg = torch.nn.functional.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)[0]
    return bg * float(rng.uniform(0.3, 1.0))


def render_motion(label: int, frames: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """One dark clip of motion ``label`` (see :data:`MOTIONS`): float32 ``(3, frames, size, size)``."""
    if not 0 <= label < len(MOTIONS):
        raise ValueError(f"motion label must be in [0, {len(MOTIONS)}), got {label}")
    motion = MOTIONS[label]
    t = torch.arange(frames, dtype=torch.float32) / max(1, frames - 1)  # 0..1 over the clip
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    drift = torch.from_numpy(rng.uniform(-0.05, 0.05, size=2).astype(np.float32))  # camera drift over the clip
    video = _background(rng, size)[:, None].repeat(1, frames, 1, 1)  # (3,T,S,S)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(3))  # 0 ellipse, 1 bar, 2 rectangle
        a = float(rng.uniform(0.12, 0.35))
        b = a * (float(rng.uniform(0.15, 0.35)) if kind == 1 else float(rng.uniform(0.5, 1.0)))
        cx, cy = (float(v) for v in rng.uniform(-0.4, 0.4, size=2))
        theta0 = float(rng.uniform(0, math.pi))
        speed = float(rng.uniform(0.5, 1.1))  # displacement over the clip (in half-frame units)
        spin = float(rng.uniform(0.5, 1.5)) * math.pi / 2  # rotation over the clip (rad)
        scale_to = float(rng.uniform(1.6, 2.4))
        colour = torch.from_numpy(rng.uniform(0.6, 1.0, size=3).astype(np.float32))
        for f in range(frames):
            tf = float(t[f])
            x0 = cx + float(drift[0]) * tf
            y0 = cy + float(drift[1]) * tf
            th, s = theta0, 1.0
            if motion == "right":
                x0 += speed * (tf - 0.5)
            elif motion == "left":
                x0 -= speed * (tf - 0.5)
            elif motion == "down":
                y0 += speed * (tf - 0.5)
            elif motion == "up":
                y0 -= speed * (tf - 0.5)
            elif motion == "clockwise":
                th += spin * tf
            elif motion == "anticlockwise":
                th -= spin * tf
            elif motion == "grow":
                s = scale_to ** (tf - 0.5)
            else:  # shrink
                s = scale_to ** (0.5 - tf)
            dx, dy = xs - x0, ys - y0
            u = dx * math.cos(th) + dy * math.sin(th)
            v = -dx * math.sin(th) + dy * math.cos(th)
            if kind == 0:
                inside = (u / (a * s)) ** 2 + (v / (b * s)) ** 2 <= 1.0
            else:
                inside = (u.abs() <= a * s) & (v.abs() <= b * s)
            video[:, f][:, inside] = colour[:, None]
    gain = float(rng.uniform(0.1, 0.6))
    gamma = float(rng.uniform(1.2, 2.2))
    noise = float(rng.uniform(0.005, 0.03))
    dark = (video.clamp(0, 1) ** gamma) * gain
    dark = dark + noise * torch.from_numpy(rng.standard_normal(dark.shape).astype(np.float32))
    return dark.clamp_(0.0, 1.0).contiguous()


class MotionClips:
    """``length`` synthetic motion clips of ``clip_cfg``'s frames and size (see the module docstring).

    Labels cycle through the classes (``index % 8``), so every batch is close to balanced; the rest
    (shapes, speeds, light, noise) is drawn from ``default_rng((seed, epoch, index))``, or
    ``(seed, index)`` when ``fixed`` (a validation set that does not change between epochs).
    """

    classes = list(MOTIONS)

    def __init__(self, length: int, clip_cfg: Any, seed: int = 0, fixed: bool = False):
        if length < 1:
            raise ValueError(f"MotionClips needs length >= 1, got {length}")
        self.length, self.frames, self.size = int(length), int(clip_cfg.frames), int(clip_cfg.size)
        self.seed, self.fixed, self.epoch = int(seed), bool(fixed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        key = (self.seed, index) if self.fixed else (self.seed, self.epoch, index)
        rng = np.random.default_rng((*key, 104729))
        label = index % len(MOTIONS)
        return {"video": render_motion(label, self.frames, self.size, rng), "label": label,
                "key": f"motion-{index}", "index": int(index)}
