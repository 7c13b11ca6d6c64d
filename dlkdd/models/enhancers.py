"""Light enhancers for the teacher: ZeroDCE, gamma correction, multi-scale Retinex, identity.

Every enhancer is an ``nn.Module`` with ``forward(x) -> enhanced`` of the same shape, on
images ``(N,3,H,W)`` or clips ``(B,3,T,H,W)``, values in [0,1] in and out. Enhancers are
per-frame: a clip is processed as ``B*T`` images in one batch.

- :class:`~dlkdd.models.zerodce.ZeroDCEEnhancer`: Zero-DCE (Guo et al., CVPR 2020), the
  DL-KDD teacher's enhancer.
- :class:`GammaCorrection`: DarkLight's gamma intensity correction ``x ** (1/gamma)``
  (Chen et al., "DarkLight Networks for Action Recognition in the Dark", CVPRW 2021).
- :class:`MultiScaleRetinex`: Jobson, Rahman & Woodell, "A multiscale retinex for bridging the
  gap between color images and the human observation of scenes", IEEE TIP 6(7), 1997 - the
  Retinex-style enhancement used by ActLumos-like teachers.
- :class:`Identity`: no enhancement (``enhancer.kind: none``).

:func:`build_enhancer` builds one from an :class:`~dlkdd.config.EnhancerConfig`;
:func:`enhancer_spec` / :func:`enhancer_from_spec` describe it as a plain dict stored in
checkpoints, so a checkpoint rebuilds its enhancer without the original weights file.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dlkdd.errors import CheckpointError
from dlkdd.models.weights import weights_mismatch
from dlkdd.models.zerodce import ZeroDCEEnhancer, frames_to_images, images_to_frames, load_zerodce_state_dict

log = logging.getLogger(__name__)

__all__ = [
    "GammaCorrection",
    "MultiScaleRetinex",
    "Identity",
    "ZeroDCEEnhancer",
    "build_enhancer",
    "enhancer_spec",
    "enhancer_from_spec",
]


class GammaCorrection(nn.Module):
    """Gamma intensity correction ``y = max(x, eps) ** (1 / gamma)`` (DarkLight, gamma > 1
    brightens). The clamp to ``eps`` keeps the gradient finite at 0 (d/dx x^(1/g) is
    unbounded there); ``eps = 1e-6`` shifts a black pixel to ``eps ** (1/gamma)`` (0.01 for g=3)."""

    def __init__(self, gamma: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.gamma = float(gamma)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(1.0 / self.gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


def gaussian_kernel1d(sigma: float, dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma`` on ``[-ceil(3 sigma), ceil(3 sigma)]``."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` (N,C,H,W), each channel on its own, replicate padding
    (works for any image size, even smaller than the kernel)."""
    n, c, h, w = x.shape
    k = gaussian_kernel1d(sigma, x.dtype, x.device)
    r = k.numel() // 2
    kx = k.view(1, 1, 1, -1).expand(c, 1, 1, k.numel())
    ky = k.view(1, 1, -1, 1).expand(c, 1, k.numel(), 1)
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), kx, groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), ky, groups=c)


class MultiScaleRetinex(nn.Module):
    """Multi-scale Retinex (Jobson et al. 1997), per colour channel ``i``::

        R_i = 1/S * sum_s [ log(I_i + c) - log(G_sigma_s * I_i + c) ]

    with Gaussian surrounds ``G_sigma`` (separable convolutions, replicate padding), equal
    weights over the ``S`` scales (default sigmas 2, 8, 24 pixels - chosen for small video
    frames; Jobson et al. use 15, 80, 250 on full-size photographs) and ``c = 1/255`` so black
    pixels stay finite. ``R`` is unbounded; it is mapped back to [0,1] per frame by a robust
    min/max: ``y = clamp((R - q_lo) / (q_hi - q_lo), 0, 1)`` with ``q_lo``/``q_hi`` the
    ``low``/``high`` quantiles (default 1% and 99%) of ``R`` over all pixels and channels of
    the frame (the "canonical gain/offset" of Jobson et al. is a fixed linear map; per-frame
    quantiles adapt to each frame's exposure instead). Frames are independent, so clips can
    flicker slightly where the statistics of consecutive frames differ.
    """

    def __init__(self, sigmas: Sequence[float] = (2.0, 8.0, 24.0), low: float = 0.01, high: float = 0.99,
                 offset: float = 1.0 / 255.0) -> None:
        super().__init__()
        if not sigmas or any(s <= 0 for s in sigmas):
            raise ValueError(f"sigmas must be positive, got {sigmas}")
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
        self.sigmas = tuple(float(s) for s in sigmas)
        self.low, self.high, self.offset = float(low), float(high), float(offset)

    def retinex(self, x: torch.Tensor) -> torch.Tensor:
        """The raw multi-scale Retinex output ``R`` (N,3,H,W), unbounded."""
        log_x = torch.log(x.clamp(min=0) + self.offset)
        r = sum(log_x - torch.log(gaussian_blur(x.clamp(min=0), s) + self.offset) for s in self.sigmas)
        return r / len(self.sigmas)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        imgs, shape5 = frames_to_images(x)
        r = self.retinex(imgs)
        flat = r.flatten(1)
        m = flat.shape[1]
        # k-th smallest values (1-based) per frame: exact order statistics, no size limit
        k_lo = min(m, max(1, int(round(self.low * (m - 1))) + 1))
        k_hi = min(m, max(1, int(round(self.high * (m - 1))) + 1))
        lo = flat.kthvalue(k_lo, dim=1).values.view(-1, 1, 1, 1)
        hi = flat.kthvalue(k_hi, dim=1).values.view(-1, 1, 1, 1)
        y = ((r - lo) / (hi - lo).clamp(min=1e-6)).clamp(0.0, 1.0)
        return images_to_frames(y, shape5)

    def extra_repr(self) -> str:
        return f"sigmas={self.sigmas}, low={self.low}, high={self.high}"


class Identity(nn.Module):
    """No enhancement: returns its input (any shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _resolve_weights(path: str) -> Path:
    p = Path(path).expanduser()
    if not path or not p.is_file():
        raise CheckpointError(
            f"ZeroDCE weights not found: {path or '<empty enhancer.weights>'}"
            f" (resolved to {p.resolve() if path else '-'}). Train them with `dlkdd enhancer --config C --out DIR` "
            f"and set enhancer.weights=DIR/enhancer.pt, or set enhancer.weights to the official "
            f"Epoch99.pth (../shared/data/zerodce/Epoch99.pth)"
        )
    return p


def enhancer_spec(enh_cfg: Any) -> dict[str, Any]:
    """A plain, JSON/checkpoint-friendly description of the enhancer of ``enh_cfg``
    (an :class:`~dlkdd.config.EnhancerConfig` or a mapping with the same keys)::

        {"kind": "zerodce"|"gamma"|"retinex"|"none", "gamma": float,
         "retinex_sigmas": [float, ...], "weights": str}

    ``weights`` is informational (where the ZeroDCE weights came from); the weights
    themselves are stored as the checkpoint's enhancer state dict.
    """
    get = (lambda k, d=None: enh_cfg.get(k, d)) if isinstance(enh_cfg, Mapping) else (lambda k, d=None: getattr(enh_cfg, k, d))
    kind = get("kind", "zerodce")
    if kind not in ("zerodce", "gamma", "retinex", "none"):
        raise ValueError(f"unknown enhancer kind {kind!r}; expected zerodce, gamma, retinex or none")
    return {
        "kind": kind,
        "gamma": float(get("gamma", 3.0)),
        "retinex_sigmas": [float(s) for s in get("retinex_sigmas", (2.0, 8.0, 24.0))],
        "weights": str(get("weights", "") or ""),
    }


def enhancer_from_spec(spec: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """Rebuild an enhancer from :func:`enhancer_spec`'s dict.

    ZeroDCE: from ``state_dict`` when given (e.g. a checkpoint's ``enhancer`` entry, loaded
    strictly), else from the ``weights`` file of the spec. Other kinds have no weights.
    The module is returned in eval mode.
    """
    kind = spec.get("kind", "zerodce")
    if kind == "zerodce":
        m = ZeroDCEEnhancer()
        if state_dict is not None:
            report = weights_mismatch(m.state_dict(), state_dict)
            if report:
                raise CheckpointError(f"enhancer state dict does not fit ZeroDCE ({report})")
            m.load_state_dict(dict(state_dict))
        else:
            m.load_state_dict(load_zerodce_state_dict(_resolve_weights(str(spec.get("weights", "")))))
    elif kind == "gamma":
        m = GammaCorrection(float(spec.get("gamma", 3.0)))
    elif kind == "retinex":
        m = MultiScaleRetinex(tuple(spec.get("retinex_sigmas", (2.0, 8.0, 24.0))))
    elif kind == "none":
        m = Identity()
    else:
        raise ValueError(f"unknown enhancer kind {kind!r}; expected zerodce, gamma, retinex or none")
    return m.eval()


def build_enhancer(enh_cfg: Any) -> nn.Module:
    """The enhancer of ``enh_cfg`` (:class:`~dlkdd.config.EnhancerConfig`), in eval mode.

    ``zerodce`` loads ``enh_cfg.weights`` (official ``Epoch99.pth`` or a ``dlkdd enhancer``
    ``enhancer.pt``); a missing file raises :class:`CheckpointError` naming the path and the fix.
    """
    spec = enhancer_spec(enh_cfg)
    m = enhancer_from_spec(spec)
    log.info("enhancer: %s%s", spec["kind"], f" ({spec['weights']})" if spec["kind"] == "zerodce" else "")
    return m
