"""The four zero-reference losses of Zero-DCE (Guo et al., CVPR 2020, Sec. 3.3), pure functions.

No paired or reference image is needed: the losses only look at the input, the output and
the curve maps. Shapes: images ``(N,3,H,W)`` in [0,1]; curve maps ``r`` ``(N,24,H,W)``.
Each function returns a scalar: the batch reduction is the one of the official training
script, so the weighted total matches the published implementation (checked against its
outputs in ``tests/test_zerodce.py``)::

    L_total = 200 * L_tvA + 1 * L_spa + 5 * L_col + 10 * L_exp        (official weights)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "spatial_consistency_loss",
    "exposure_loss",
    "color_constancy_loss",
    "illumination_smoothness_loss",
    "zero_reference_loss",
    "WEIGHTS",
]

# Loss weights of the official training script (W_tvA = 200, W_col = 5, W_exp = 10, spa 1).
WEIGHTS = {"tv": 200.0, "spa": 1.0, "col": 5.0, "exp": 10.0}
EXPOSURE_LEVEL = 0.6  # E, the well-exposedness level (paper Sec. 3.3: E = 0.6)
EXPOSURE_PATCH = 16  # M, side of the non-overlapping regions of the exposure loss
SPATIAL_POOL = 4  # side of the local regions of the spatial consistency loss


def _directional_diffs(y: torch.Tensor) -> list[torch.Tensor]:
    """Differences of every cell of ``y`` (N,1,h,w) with its left, right, up and down
    neighbour; the map is zero-padded, so a border cell is compared with 0."""
    p = F.pad(y, (1, 1, 1, 1))
    c = p[:, :, 1:-1, 1:-1]
    return [
        c - p[:, :, 1:-1, :-2],  # left
        c - p[:, :, 1:-1, 2:],  # right
        c - p[:, :, :-2, 1:-1],  # up
        c - p[:, :, 2:, 1:-1],  # down
    ]


def spatial_consistency_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spatial consistency ``L_spa`` (paper Eq. 5), mean over cells and batch::

        L_spa = mean_{n,i} sum_{j in {left,right,up,down}} ( |Y_i - Y_j| - |I_i - I_j| )^2

    computed, as the official code does, with signed differences ``((Y_i - Y_j) - (I_i - I_j))^2``
    where ``Y``/``I`` are the channel-mean luminance of ``a``/``b`` average-pooled over
    non-overlapping 4x4 regions (``floor(H/4) x floor(W/4)`` cells), and border cells compared
    with a zero padding. The value is symmetric in ``(a, b)``; the official script calls it as
    ``(enhanced, original)``.
    """
    ya = F.avg_pool2d(a.mean(dim=1, keepdim=True), SPATIAL_POOL)
    yb = F.avg_pool2d(b.mean(dim=1, keepdim=True), SPATIAL_POOL)
    e = sum((da - db) ** 2 for da, db in zip(_directional_diffs(ya), _directional_diffs(yb)))
    return e.mean()


def exposure_loss(enhanced: torch.Tensor, level: float = EXPOSURE_LEVEL, patch: int = EXPOSURE_PATCH) -> torch.Tensor:
    """Exposure control ``L_exp`` (paper Eq. 6)::

        L_exp = mean_{n,k} ( Y_k - E )^2

    ``Y_k``: mean over the RGB channels, then over the ``k``-th non-overlapping ``patch x patch``
    region (``floor(H/patch) x floor(W/patch)`` regions); ``E = 0.6``.
    """
    y = F.avg_pool2d(enhanced.mean(dim=1, keepdim=True), patch)
    return ((y - level) ** 2).mean()


def color_constancy_loss(enhanced: torch.Tensor) -> torch.Tensor:
    """Colour constancy ``L_col`` (Gray-World; paper Eq. 7), as the official code computes it::

        L_col = mean_n sqrt( D_rg^2 + D_rb^2 + D_gb^2 ),   D_pq = (J^p - J^q)^2

    with ``J^p`` the mean of channel ``p`` over the image. (The paper writes ``sum (J^p - J^q)^2``;
    the official implementation takes the root of the sum of the squared ``D_pq``.)
    """
    m = enhanced.mean(dim=(2, 3))
    r, g, b = m[:, 0], m[:, 1], m[:, 2]
    d_rg, d_rb, d_gb = (r - g) ** 2, (r - b) ** 2, (g - b) ** 2
    return torch.sqrt(d_rg ** 2 + d_rb ** 2 + d_gb ** 2).mean()


def illumination_smoothness_loss(r: torch.Tensor) -> torch.Tensor:
    """Illumination smoothness ``L_tvA`` (paper Eq. 8) on the curve maps ``r`` (N,C,H,W)::

        L_tvA = 2/N * ( sum (dy A)^2 / ((H-1) W) + sum (dx A)^2 / (H (W-1)) )

    sums over the batch, all ``C`` (= 24) maps and all positions; ``dy``/``dx`` are forward
    differences. Normalised per position but not per map, divided by the batch size ``N`` -
    the official implementation's total-variation loss.
    """
    n, _, h, w = r.shape
    dy = ((r[:, :, 1:, :] - r[:, :, :-1, :]) ** 2).sum()
    dx = ((r[:, :, :, 1:] - r[:, :, :, :-1]) ** 2).sum()
    count_h = max((h - 1) * w, 1)
    count_w = max(h * (w - 1), 1)
    return 2.0 * (dy / count_h + dx / count_w) / n


def zero_reference_loss(original: torch.Tensor, enhanced: torch.Tensor, r: torch.Tensor) -> dict[str, torch.Tensor]:
    """The weighted Zero-DCE training objective.

    Returns ``{"loss": tv + spa + col + exp, "tv": 200 L_tvA(r), "spa": L_spa(enhanced, original),
    "col": 5 L_col(enhanced), "exp": 10 L_exp(enhanced)}`` (all scalars, the terms already weighted).
    """
    tv = WEIGHTS["tv"] * illumination_smoothness_loss(r)
    spa = WEIGHTS["spa"] * spatial_consistency_loss(enhanced, original)
    col = WEIGHTS["col"] * color_constancy_loss(enhanced)
    exp = WEIGHTS["exp"] * exposure_loss(enhanced)
    return {"loss": tv + spa + col + exp, "tv": tv, "spa": spa, "col": col, "exp": exp}
