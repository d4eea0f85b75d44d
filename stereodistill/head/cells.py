"""BEV cells of the anchor grid: their centres, and which lie inside boxes (LIGA's "inbox" cells).

Cell ``iy * nx + ix`` is the grid's BEV cell at row ``iy`` (y) and column ``ix`` (x): the order of a dense BEV map
``(B, C, ny, nx)`` flattened over its last two axes. Used by CLD's ``gt_boxes`` region, the teacher cache's
feature cells and the student's feature imitation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stereodistill.geometry.bev import points_in_bev_boxes
from stereodistill.head.anchors import AnchorGrid


def cell_centres(grid: AnchorGrid, device: torch.device | str | None = None) -> Tensor:
    """BEV centres ``(ny * nx, 2)`` (x, y; project frame) of the grid's cells, in cell order ``iy * nx + ix``.

    These are the geometric cell centres; with ``anchor_placement: range_corners`` the anchors sit within half a
    cell of them.
    """
    x_min, y_min = grid.point_cloud_range[0], grid.point_cloud_range[1]
    cell = grid.bev_cell_size
    xs = x_min + (torch.arange(grid.nx, dtype=torch.float64, device=device) + 0.5) * cell
    ys = y_min + (torch.arange(grid.ny, dtype=torch.float64, device=device) + 0.5) * cell
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)


def cells_in_boxes(grid: AnchorGrid, boxes: Sequence[Tensor]) -> Tensor:
    """``(B, ny * nx)`` bool: cells whose centre lies in any of the frame's GT BEV boxes (rotated).

    ``boxes``: one ``(D_b, 7)`` tensor of project boxes per frame (``D_b`` may be 0). Output on the device of the
    first frame's boxes (CPU when there are no frames).
    """
    device = boxes[0].device if len(boxes) else None
    centres = cell_centres(grid, device)
    if not len(boxes):
        return torch.zeros(0, centres.shape[0], dtype=torch.bool, device=device)
    return torch.stack([points_in_bev_boxes(centres, frame_boxes) for frame_boxes in boxes])
