"""Plane-sweep stereo cost volume over depth planes (LIGA-Stereo's ``build_cost_volume``).

For plane depth ``d`` the disparity between image_2 and image_3 is ``f_u * baseline / d`` image pixels, i.e.
``f_u * baseline / (d * s)`` feature pixels at feature stride ``s``. Left feature pixel ``(i, j)`` meets the
right feature bilinearly sampled at ``(i, j - disparity)`` (zero outside the right map; pixel centres at integer
coordinates, see :mod:`stereodistill.student.backbone`). ``f_u`` and the baseline come per sample from
``Calibration.focal_length`` / ``Calibration.baseline`` (the small forward offsets ``t_z`` of the two cameras
are ignored, as in LIGA).

Kinds: ``concat`` stacks left and sampled right features (``2C`` channels); ``gwc`` is group-wise correlation
(Guo et al. 2019): channels split into ``G`` groups, the mean of ``left * right`` per group (``G`` channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def plane_disparities(focal_baseline: Tensor, plane_depths: Tensor, stride: int) -> Tensor:
    """Disparity in feature pixels ``(B, D)`` of every plane, from ``f_u * baseline`` ``(B,)`` and depths ``(D,)``."""
    return focal_baseline[:, None] / (plane_depths[None, :] * stride)


def sample_right(right: Tensor, disparities: Tensor) -> Tensor:
    """Right features ``(B, C, H, W)`` shifted per plane: ``out[b, c, p, i, j] = right[b, c, i, j - disp[b, p]]``.

    Bilinear, zero outside. Returns ``(B, C, D, H, W)``.
    """
    b, _, h, w = right.shape
    d = disparities.shape[1]
    cols = torch.arange(w, device=right.device, dtype=right.dtype)
    rows = torch.arange(h, device=right.device, dtype=right.dtype)
    x = cols.view(1, 1, 1, w) - disparities.view(b, d, 1, 1).to(right.dtype)  # (B, D, 1, W)
    # align_corners=True: -1 and +1 are the centres of the first and last pixels.
    gx = (2.0 * x / max(w - 1, 1) - 1.0).expand(b, d, h, w)
    gy = (2.0 * rows / max(h - 1, 1) - 1.0).view(1, 1, h, 1).expand(b, d, h, w)
    grid = torch.stack([gx, gy], dim=-1).reshape(b, d * h, w, 2)
    sampled = F.grid_sample(right, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return sampled.view(b, right.shape[1], d, h, w)


def build_cost_volume(left: Tensor, right: Tensor, disparities: Tensor, kind: str, groups: int = 1) -> Tensor:
    """Plane-sweep volume from left/right features ``(B, C, H, W)`` and plane disparities ``(B, D)``.

    ``kind="concat"`` -> ``(B, 2C, D, H, W)``; ``kind="gwc"`` -> ``(B, groups, D, H, W)``.
    """
    if left.shape != right.shape:
        raise ValueError(
            f"left and right features differ in shape: {tuple(left.shape)} vs {tuple(right.shape)}"
        )
    if disparities.dim() != 2 or disparities.shape[0] != left.shape[0]:
        raise ValueError(f"expected disparities (B={left.shape[0]}, D), got {tuple(disparities.shape)}")
    shifted = sample_right(right, disparities)
    d = disparities.shape[1]
    expanded = left.unsqueeze(2).expand(-1, -1, d, -1, -1)
    if kind == "concat":
        return torch.cat([expanded, shifted], dim=1)
    if kind == "gwc":
        b, c, _, h, w = shifted.shape
        if c % groups:
            raise ValueError(f"groups ({groups}) must divide the feature channels ({c})")
        product = (expanded * shifted).view(b, groups, c // groups, d, h, w)
        return product.mean(dim=2)
    raise ValueError(f"kind must be 'concat' or 'gwc', got {kind!r}")
