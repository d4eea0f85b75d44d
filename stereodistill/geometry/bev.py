"""Bird's-eye-view point tests on project boxes, in torch."""

from __future__ import annotations

import torch
from torch import Tensor


def points_in_bev_boxes(points: Tensor, boxes: Tensor) -> Tensor:
    """``(N,)`` bool: BEV point ``(N, 2)`` lies inside or on the rotated footprint of any box ``(D, 7)``.

    Computed in float64 on the points' device; memory is ``N x D``.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    boxes = boxes.to(device=points.device, dtype=torch.float64)
    d = points.to(torch.float64)[:, None, :] - boxes[None, :, :2]  # (N, D, 2)
    c, s = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    along = d[..., 0] * c + d[..., 1] * s
    across = -d[..., 0] * s + d[..., 1] * c
    inside = (along.abs() <= boxes[:, 3] / 2) & (across.abs() <= boxes[:, 4] / 2)
    return inside.any(dim=1)
