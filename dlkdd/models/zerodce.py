"""Zero-DCE: the DCE-Net light-enhancement curve estimator.

Guo, Li, Guo, Loy, Hou, Kwong, Cong, "Zero-Reference Deep Curve Estimation for Low-Light
Image Enhancement", CVPR 2020 (arXiv:2001.06826). The network (paper Sec. 3.2, Fig. 2) is
seven 3x3 convolutions of 32 channels with ReLU, stride 1, no down-sampling, with symmetric
skip concatenations::

    x1 = relu(conv1(I))          x5 = relu(conv5([x3, x4]))
    x2 = relu(conv2(x1))         x6 = relu(conv6([x2, x5]))
    x3 = relu(conv3(x2))         A  = tanh(conv7([x1, x6]))      # (N, 24, H, W) in [-1, 1]
    x4 = relu(conv4(x3))

``A`` is split into 8 curve maps ``A_n`` of 3 channels (one per RGB channel), applied
iteratively with the light-enhancement curve (paper Eq. 4)::

    LE_n(x) = LE_{n-1}(x) + A_n * (LE_{n-1}(x)^2 - LE_{n-1}(x)),     LE_0 = I,  n = 1..8

Module attribute names (``e_conv1`` ... ``e_conv7``) equal the official implementation's, so
its published ``Epoch99.pth`` loads as it is (:meth:`ZeroDCE.from_official`).

Denormal weights: the official ``Epoch99.pth`` holds 19,266 subnormal floats (|w| < 1.2e-38) among
its 79,416 parameters. x86 CPUs compute with subnormals through a slow microcode path: a DCE-Net
forward pass took 1.58 s on 16 frames of 32x32 instead of 0.067 s. Every load of ZeroDCE weights
(official file, enhancer or teacher checkpoint) sets them to 0 (:func:`flush_denormals_`); the
enhanced output on that input is bit-identical (max difference 0.0), since a subnormal weight
times an activation in [0, 1] vanishes next to the other terms of its sum.

Shapes:
    ``ZeroDCE.forward(x (N,3,H,W) in [0,1]) -> (enhanced_after_4 (N,3,H,W), enhanced (N,3,H,W), r (N,24,H,W))``
    ``ZeroDCE.enhance(x (N,3,H,W) | (B,3,T,H,W)) -> enhanced, same shape`` (frames batched as B*T images).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlkdd.errors import CheckpointError
from dlkdd.models.weights import load_error_reason

log = logging.getLogger(__name__)

__all__ = ["ZeroDCE", "ZeroDCEEnhancer", "load_zerodce_state_dict", "flush_denormals_", "frames_to_images",
           "images_to_frames"]

CHANNELS = 32  # feature channels of every hidden layer (paper Sec. 3.2)
ITERATIONS = 8  # curve iterations n (paper Sec. 3.1: n = 8 works best)


def frames_to_images(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...] | None]:
    """``(B,3,T,H,W)`` -> ``(B*T,3,H,W)`` (frame-major per clip); ``(N,3,H,W)`` passes through.

    Returns the images and the 5-D shape needed by :func:`images_to_frames` (None for 4-D input).
    """
    if x.dim() == 4:
        return x, None
    if x.dim() == 5:
        b, c, t, h, w = x.shape
        return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), (b, c, t, h, w)
    raise ValueError(f"expected (N,3,H,W) or (B,3,T,H,W), got shape {tuple(x.shape)}")


def images_to_frames(y: torch.Tensor, shape5: tuple[int, ...] | None) -> torch.Tensor:
    """Inverse of :func:`frames_to_images`."""
    if shape5 is None:
        return y
    b, _, t, h, w = shape5
    return y.reshape(b, t, y.shape[1], h, w).permute(0, 2, 1, 3, 4)


def flush_denormals_(module: nn.Module) -> int:
    """Set ``module``'s subnormal float parameters and buffers to 0 in place; returns how many."""
    n = 0
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                sub = (t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)
                k = int(sub.sum())
                if k:
                    t.masked_fill_(sub, 0.0)
                    n += k
    return n


def _flush_after_load(module: nn.Module, _incompatible_keys: Any) -> None:
    flush_denormals_(module)


class ZeroDCE(nn.Module):
    """DCE-Net with the 8-iteration quadratic light-enhancement curve (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        # after any load_state_dict (this module's or a parent's: a teacher checkpoint), drop subnormals
        self.register_load_state_dict_post_hook(_flush_after_load)
        c = CHANNELS
        conv = lambda i, o: nn.Conv2d(i, o, kernel_size=3, stride=1, padding=1, bias=True)  # noqa: E731
        self.e_conv1 = conv(3, c)
        self.e_conv2 = conv(c, c)
        self.e_conv3 = conv(c, c)
        self.e_conv4 = conv(c, c)
        self.e_conv5 = conv(2 * c, c)
        self.e_conv6 = conv(2 * c, c)
        self.e_conv7 = conv(2 * c, 3 * ITERATIONS)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise conv weights from N(0, 0.02) as the official training script does
        (its ``weights_init``); biases keep PyTorch's default initialisation."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def curves(self, x: torch.Tensor) -> torch.Tensor:
        """The 24 curve-parameter maps ``A`` ``(N,24,H,W)`` in [-1, 1] for images ``x`` ``(N,3,H,W)``."""
        x1 = F.relu(self.e_conv1(x))
        x2 = F.relu(self.e_conv2(x1))
        x3 = F.relu(self.e_conv3(x2))
        x4 = F.relu(self.e_conv4(x3))
        x5 = F.relu(self.e_conv5(torch.cat([x3, x4], 1)))
        x6 = F.relu(self.e_conv6(torch.cat([x2, x5], 1)))
        return torch.tanh(self.e_conv7(torch.cat([x1, x6], 1)))

    @staticmethod
    def apply_curves(x: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply ``x <- x + r_n (x^2 - x)`` for the 8 groups of 3 maps of ``r``.

        Returns ``(image after 4 iterations, image after 8 iterations)``.
        """
        after_4 = x
        for n, rn in enumerate(torch.split(r, 3, dim=1)):
            x = x + rn * (x * x - x)
            if n == 3:
                after_4 = x
        return after_4, x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` (N,3,H,W) in [0,1] -> ``(enhanced_after_4, enhanced, r (N,24,H,W))``, the
        official implementation's output order."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ZeroDCE.forward expects (N,3,H,W), got shape {tuple(x.shape)}; use enhance() for clips")
        r = self.curves(x)
        after_4, enhanced = self.apply_curves(x, r)
        return after_4, enhanced, r

    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        """Enhanced images/clips of the same shape: ``(N,3,H,W)`` or ``(B,3,T,H,W)`` in [0,1].

        Clips are enhanced frame by frame, all ``B*T`` frames in one batch (DCE-Net is a
        per-image network: no temporal mixing).
        """
        imgs, shape5 = frames_to_images(x)
        _, enhanced, _ = self.forward(imgs)
        return images_to_frames(enhanced, shape5)

    @classmethod
    def from_official(cls, path: str | Path) -> "ZeroDCE":
        """Build a DCE-Net from the official ``Epoch99.pth`` (a plain state dict) or from a
        ``dlkdd enhancer`` checkpoint (a dict whose ``model`` is the state dict). See
        :func:`load_zerodce_state_dict`."""
        model = cls()
        model.load_state_dict(load_zerodce_state_dict(path))
        return model


class ZeroDCEEnhancer(ZeroDCE):
    """ZeroDCE as a plain enhancer: ``forward(x) -> enhanced`` of the same shape, for
    ``(N,3,H,W)`` or ``(B,3,T,H,W)``. Its state dict is the DCE-Net's (same keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        imgs, shape5 = frames_to_images(x)
        _, enhanced, _ = ZeroDCE.forward(self, imgs)
        return images_to_frames(enhanced, shape5)

    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def net_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The full ``(enhanced_after_4, enhanced, r)`` of :meth:`ZeroDCE.forward` on images."""
        return ZeroDCE.forward(self, x)


_EXPECTED = {
    **{f"e_conv{i}.weight": (CHANNELS, 3 if i == 1 else (2 * CHANNELS if i >= 5 else CHANNELS), 3, 3) for i in range(1, 7)},
    **{f"e_conv{i}.bias": (CHANNELS,) for i in range(1, 7)},
    "e_conv7.weight": (3 * ITERATIONS, 2 * CHANNELS, 3, 3),
    "e_conv7.bias": (3 * ITERATIONS,),
}


def _extract_state_dict(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    """Find the DCE-Net state dict inside a loaded checkpoint object."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a ZeroDCE checkpoint (expected a state dict, got {type(obj).__name__})")
    if "e_conv1.weight" in obj:
        return obj
    # a dlkdd checkpoint: "enhancer" holds the enhancer of a teacher; "model" that of `dlkdd enhancer`
    kind = obj.get("kind")
    for key in (("enhancer", "model") if kind not in (None, "enhancer") else ("model", "enhancer", "state_dict")):
        sub = obj.get(key)
        if isinstance(sub, Mapping) and "e_conv1.weight" in sub:
            return sub
    # prefixed keys: DataParallel's "module.", or a Teacher state dict's "enhancer."
    for holder in (obj, obj.get("model")):
        if not isinstance(holder, Mapping):
            continue
        for prefix in ("module.", "enhancer."):
            sub = {k[len(prefix):]: v for k, v in holder.items() if isinstance(k, str) and k.startswith(prefix + "e_conv")}
            if sub:
                return sub
    return obj  # let the key check report what is wrong


def load_zerodce_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load and check a DCE-Net state dict from ``path``.

    Accepts the official ``Epoch99.pth`` (a legacy, non-zip torch pickle of a plain
    ``OrderedDict`` of tensors), a ``dlkdd enhancer`` checkpoint (``{"kind": "enhancer",
    "model": state_dict, ...}``) and a teacher checkpoint (its ``enhancer`` entry). Loaded with
    ``torch.load(weights_only=True)`` - that works for the legacy official file too (it holds
    only an ``OrderedDict`` and tensors), so no arbitrary pickle is ever executed.

    Raises :class:`CheckpointError` naming the file for a missing/unreadable file, and the
    keys for missing, unexpected or mis-shaped entries.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"ZeroDCE weights not found: {path.absolute()}. Set enhancer.weights (or --weights) to the official "
            f"Epoch99.pth or to a `dlkdd enhancer --config C --out DIR` output, or use enhancer.kind gamma/retinex "
            f"(no weights)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({load_error_reason(e)})") from None
    sd = _extract_state_dict(obj, path)
    keys = set(k for k in sd if isinstance(k, str))
    missing = sorted(set(_EXPECTED) - keys)
    unexpected = sorted(keys - set(_EXPECTED))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            shown = unexpected[:8] + (["..."] if len(unexpected) > 8 else [])
            parts.append(f"unexpected keys {shown}")
        raise CheckpointError(f"{path}: not a ZeroDCE (DCE-Net) state dict: {'; '.join(parts)}")
    bad = [f"{k} {tuple(sd[k].shape)} != {shape}" for k, shape in _EXPECTED.items()
           if not isinstance(sd[k], torch.Tensor) or tuple(sd[k].shape) != shape]
    if bad:
        raise CheckpointError(f"{path}: ZeroDCE weights of the wrong shape: {', '.join(bad)}")
    log.debug("loaded ZeroDCE weights from %s", path)
    return {k: sd[k].float() for k in _EXPECTED}
