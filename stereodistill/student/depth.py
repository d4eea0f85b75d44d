"""Depth head over the planes, soft-argmin depth, and LIGA-Stereo's two-hot cross-entropy depth loss.

Depth is supervised at **feature resolution** (LIGA upsamples its logits to full resolution; this student keeps
the planes and pixels of its cost volume). A LiDAR depth row ``(u, v, depth)`` of image_2 (fractional image
pixels, :mod:`stereodistill.data.prepared`) goes to feature pixel ``(round(v / s), round(u / s))`` (feature pixel
``(i, j)`` is centred on image pixel ``(s i, s j)``); when several rows meet one feature pixel the nearest depth
wins. Rows outside the feature map or outside ``[depth_min, depth_max)`` are dropped. A target depth is clamped
to ``[d_0, d_{D-1}]`` (the outer plane centres) so the two-hot target always carries total mass 1:

    q_p = max(0, 1 - |d_p - d_gt| / step)       loss = -sum_p q_p log softmax(logits)_p

averaged over the pixels that have a target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from stereodistill.student.settings import StudentConfig


class DepthHead(nn.Module):
    """Aggregated cost features ``(B, C, D, H, W)`` -> plane logits ``(B, D, H, W)`` (conv3d, ReLU, conv3d)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(channels, 1, 3, padding=1),
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features).squeeze(1)


def soft_argmin_depth(logits: Tensor, plane_depths: Tensor) -> Tensor:
    """Expected depth ``(B, H, W)`` under ``softmax(logits)`` over planes (``logits (B, D, H, W)``, depths ``(D,)``)."""
    probability = torch.softmax(logits, dim=1)
    return (probability * plane_depths.view(1, -1, 1, 1)).sum(dim=1)


def depth_target_map(
    rows: np.ndarray | Tensor,
    image_hw: tuple[int, int],
    stride: int,
    depth_range: tuple[float, float],
) -> Tensor:
    """Sparse target depth ``(ceil(H/s), ceil(W/s))`` float32 from depth rows ``(N, 3)`` ``(u, v, depth)``.

    0 marks pixels without a target. See the module docstring for rounding and filtering.
    """
    rows_t = torch.as_tensor(np.asarray(rows, dtype=np.float32) if not isinstance(rows, Tensor) else rows)
    rows_t = rows_t.to(torch.float32).reshape(-1, 3)
    hf, wf = math.ceil(image_hw[0] / stride), math.ceil(image_hw[1] / stride)
    j = torch.floor(rows_t[:, 0] / stride + 0.5).long()
    i = torch.floor(rows_t[:, 1] / stride + 0.5).long()
    d = rows_t[:, 2]
    keep = (i >= 0) & (i < hf) & (j >= 0) & (j < wf) & (d >= depth_range[0]) & (d < depth_range[1])
    flat = torch.full((hf * wf,), math.inf)
    flat.scatter_reduce_(0, i[keep] * wf + j[keep], d[keep], reduce="amin")
    flat[torch.isinf(flat)] = 0.0
    return flat.view(hf, wf)


def batch_depth_targets(rows: Sequence[np.ndarray], depth_logits: Tensor, config: StudentConfig) -> Tensor:
    """Target depth ``(B, Hf, Wf)`` (0: none) of each sample's depth rows on the grid of ``depth_logits
    (B, D, Hf, Wf)``, on its device (:func:`depth_target_map` with the network's stride and depth range)."""
    stride = config.feature_stride
    hw = (depth_logits.shape[-2] * stride, depth_logits.shape[-1] * stride)
    depth_range = (config.depth_min, config.depth_max)
    return torch.stack([depth_target_map(r, hw, stride, depth_range) for r in rows]).to(depth_logits.device)


def two_hot_targets(depth: Tensor, plane_depths: Tensor) -> Tensor:
    """Two-hot plane targets ``(N, D)`` for depths ``(N,)`` (clamped to the outer planes; rows sum to 1)."""
    step = plane_depths[1] - plane_depths[0]
    clamped = depth.clamp(plane_depths[0], plane_depths[-1])
    return (1.0 - (plane_depths[None, :] - clamped[:, None]).abs() / step).clamp(min=0.0)


def depth_loss(logits: Tensor, target: Tensor, plane_depths: Tensor) -> Tensor:
    """LIGA's two-hot CE: ``logits (B, D, H, W)``, ``target (B, H, W)`` (0 = none) -> scalar (0 if no target)."""
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    valid = target > 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits, dim=1).permute(0, 2, 3, 1)[valid]  # (N, D)
    q = two_hot_targets(target[valid], plane_depths.to(logits))
    return -(q * log_p).sum(dim=1).mean()
