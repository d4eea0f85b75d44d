"""Which anchors of a frame get their box cached (the "covered" anchors) and why.

An anchor of class ``c`` is covered when

- its nearest-axis BEV IoU with some GT box of class ``c`` is >= ``iou_floor`` (bit ``KIND_IOU``): with
  ``iou_floor`` below every ``matched_iou`` in use, this includes every IoU-matched positive of the assigner;
- it is a best anchor of a GT box of class ``c`` (bit ``KIND_BEST``): every anchor within the assigner's
  ``FORCE_MATCH_TOLERANCE`` of that box's highest IoU, provided it is > 0, i.e. the assigner's force matches;
- its teacher max sigmoid score over the classes is >= ``score_floor`` (bit ``KIND_SCORE``).

The first two are mandatory; if they exceed the capacity ``K`` that is an error. Confident anchors fill the
remaining slots by descending score (ties by anchor index); when some do not fit, the frame's
``score_floor_reached`` rises above ``score_floor`` to the lowest score at which every anchor is still covered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stereodistill.cache.schema import KIND_BEST, KIND_IOU, KIND_SCORE
from stereodistill.errors import InputError
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import (
    FORCE_MATCH_TOLERANCE,
    TargetAssigner,
    nearest_axis_bev_rects,
    rect_iou,
)


@dataclass(frozen=True)
class Coverage:
    """Covered anchors of one frame and view: ``index (M,)`` long ascending, ``kind (M,)`` uint8 bits."""

    index: Tensor
    kind: Tensor
    score_floor_reached: float


class CoverageRule:
    """Computes :class:`Coverage` on one grid; the per-class anchor rectangles are built once per device."""

    def __init__(self, grid: AnchorGrid, iou_floor: float, score_floor: float, capacity: int) -> None:
        self.grid = grid
        self.iou_floor = iou_floor
        self.score_floor = score_floor
        self.capacity = capacity
        self._rects: dict[torch.device, Tensor] = {}
        # The assigner's candidate anchors per GT box (a private helper, used so coverage matches it exactly).
        self._assigner = TargetAssigner(grid)

    def _class_rects(self, device: torch.device) -> Tensor:
        """``(C, ny*nx*R, 4)``: nearest-axis BEV rectangles of each class's anchors."""
        if device not in self._rects:
            g = self.grid
            anchors = g.shared_anchors(device).view(g.ny * g.nx, g.num_classes, g.num_rotations, 7)
            self._rects[device] = torch.stack(
                [nearest_axis_bev_rects(anchors[:, c].reshape(-1, 7)) for c in range(g.num_classes)]
            )
        return self._rects[device]

    def geometric(self, gt_boxes: Tensor, gt_classes: Tensor) -> tuple[Tensor, Tensor]:
        """``(N,)`` bool masks: IoU >= floor with a GT of the anchor's class; best anchor of some GT.

        IoUs are computed, as in the assigner, only for the anchors near some GT box (the assigner's own
        candidate set, so its force-match ties are reproduced exactly); all others overlap nothing.
        """
        g = self.grid
        device = gt_boxes.device
        iou_mask = torch.zeros(g.num_classes, g.ny * g.nx * g.num_rotations, dtype=torch.bool, device=device)
        best_mask = torch.zeros_like(iou_mask)
        if gt_boxes.shape[0]:
            gt_rects = nearest_axis_bev_rects(gt_boxes.to(torch.float32))
            rects = self._class_rects(device)
            for c in range(g.num_classes):
                ids = torch.nonzero(gt_classes == c).flatten()
                if not ids.numel():
                    continue
                near = self._assigner._anchors_near(c, gt_rects[ids], device)
                if not near.numel():
                    continue
                iou = rect_iou(rects[c][near], gt_rects[ids])  # (K, G_c)
                gt_best = iou.max(dim=0).values
                best = ((iou >= gt_best[None, :] - FORCE_MATCH_TOLERANCE) & (gt_best[None, :] > 0)).any(dim=1)
                iou_mask[c, near] = iou.max(dim=1).values >= self.iou_floor
                best_mask[c, near] = best
        # (C, cells * R) -> anchor order (cells, C, R)
        shape = (g.num_classes, g.ny * g.nx, g.num_rotations)
        return (
            iou_mask.view(shape).permute(1, 0, 2).flatten(),
            best_mask.view(shape).permute(1, 0, 2).flatten(),
        )

    def __call__(self, cls_logits: Tensor, gt_boxes: Tensor, gt_classes: Tensor, where: str) -> Coverage:
        """Coverage of one frame/view: ``cls_logits (N, C)``, GT ``(G, 7)`` with class ids ``(G,)``."""
        iou_mask, best_mask = self.geometric(gt_boxes, gt_classes)
        mandatory = iou_mask | best_mask
        n_mandatory = int(mandatory.sum())
        if n_mandatory > self.capacity:
            raise InputError(
                f"{where}: {n_mandatory} anchors overlap ground truth but cache.coverage.capacity is "
                f"{self.capacity}; raise the capacity (or cache.coverage.iou_floor)",
                "params.yaml",
            )
        score = torch.sigmoid(cls_logits.to(torch.float32)).max(dim=1).values
        confident = (score >= self.score_floor) & ~mandatory
        candidates = torch.nonzero(confident).flatten()
        room = self.capacity - n_mandatory
        reached = self.score_floor
        if candidates.numel() > room:
            # Descending score, ties by ascending index: a deterministic order on every device.
            order = torch.argsort(score[candidates], descending=True, stable=True)
            kept, dropped = candidates[order[:room]], candidates[order[room:]]
            highest_dropped = float(score[dropped].max())
            reached = float(torch.nextafter(torch.tensor(highest_dropped), torch.tensor(2.0)))
            confident = torch.zeros_like(confident)
            confident[kept] = True
        covered = mandatory | confident
        index = torch.nonzero(covered).flatten()
        kind = (
            iou_mask[index].to(torch.uint8) * KIND_IOU
            + best_mask[index].to(torch.uint8) * KIND_BEST
            + (score[index] >= self.score_floor).to(torch.uint8) * KIND_SCORE
        )
        return Coverage(index, kind, reached)
