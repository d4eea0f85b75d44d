"""LIGA-Stereo's feature imitation on the BEV map (docs/METHOD.md §5.8): the student's BEV features, through a
1x1 adapter (:class:`~stereodistill.student.model.StereoStudent`'s ``imitation``), regressed onto the LiDAR
teacher's BEV features at the cells inside GT boxes.

Per frame ``b`` the teacher cache holds ``M_b`` cells (indices ``iy * nx + ix`` into the shared BEV grid) and the
teacher's feature ``(M_b, Ct)`` at each. LIGA's form, with ``s`` the per-channel normaliser ``(Ct,)`` (LIGA's
``cw_scale``, the cache's mean ``|x|`` per channel over every stored cell, fixed for the whole run)::

    K    = the batch's cells whose teacher feature is not all zero
    L    = weight * sum_{k in K} 0.5 * mean_c (pred_k,c - target_k,c / s_c)^2 / max(|K|, 10)

The loss is normalised by the batch's kept cells only: LIGA divides by the batch size once more on top (one frame
per GPU there), which we do not, so the weight means the same at any batch size. No gradient reaches the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

MIN_CELLS = 10  # LIGA's floor on the normalising cell count


def imitation_loss(
    pred: Tensor,
    cells: Sequence[Tensor],
    targets: Sequence[Tensor],
    scale: Tensor,
    weight: float = 1.0,
) -> Tensor:
    """The imitation loss (module docstring) as a scalar, computed in float32.

    ``pred (B, Ct, ny, nx)``: the student's adapted BEV features; ``cells[b] (M_b,)`` int64 cell indices
    ``iy * nx + ix`` and ``targets[b] (M_b, Ct)`` the teacher's features there; ``scale (Ct,)`` the per-channel
    normaliser (a channel with scale 0, all zero in the cache, is left undivided). Cells whose target is all zero
    are dropped. No cell kept in the whole batch gives a zero loss still attached to ``pred``'s graph. Never
    waits for the device (the kept count stays a tensor).
    """
    if pred.dim() != 4:
        raise ValueError(f"pred must have shape (B, Ct, ny, nx), got {tuple(pred.shape)}")
    b, channels = pred.shape[:2]
    if len(cells) != b or len(targets) != b:
        raise ValueError(
            f"need one cells and one targets tensor per frame ({b}), got {len(cells)} and {len(targets)}"
        )
    if scale.shape != (channels,):
        raise ValueError(f"scale must have shape ({channels},), got {tuple(scale.shape)}")
    for k, (cell, target) in enumerate(zip(cells, targets, strict=True)):
        if cell.dim() != 1 or target.shape != (cell.shape[0], channels):
            raise ValueError(
                f"frame {k}: cells must be (M,) and targets (M, {channels}), "
                f"got {tuple(cell.shape)} and {tuple(target.shape)}"
            )
    flat = pred.float().flatten(2)  # (B, Ct, ny * nx)
    picked = torch.cat(
        [flat[k][:, cell.to(pred.device, torch.long)].T for k, cell in enumerate(cells)]
    )  # (M, Ct)
    target = torch.cat([t.to(pred.device, torch.float32) for t in targets]).detach()  # (M, Ct)
    keep = (target != 0).any(dim=1)  # (M,)
    s = scale.to(pred.device, torch.float32)
    target = target / torch.where(s > 0, s, torch.ones_like(s))
    per_cell = 0.5 * (picked - target).square().mean(dim=1)  # (M,)
    total = torch.where(keep, per_cell, per_cell.new_zeros(())).sum()
    return weight * total / keep.sum().clamp(min=MIN_CELLS).to(total.dtype)
