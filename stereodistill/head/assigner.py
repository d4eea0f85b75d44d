"""Anchor target assignment (SECOND / OpenPCDet's axis-aligned assigner), per class, on the anchor grid.

For each grid class ``c`` the anchors of class ``c`` are matched against the GT boxes of class ``c`` by **BEV
IoU with both headings snapped to the nearest axis** (:func:`nearest_axis_bev_iou`): a box whose heading is
nearer to +-pi/2 than to 0 or pi swaps its ``l`` and ``w`` and is treated as an axis-aligned rectangle. Then:

- positive: IoU >= ``matched_iou`` with some GT, or the anchor is a *best anchor* of some GT (force match:
  every anchor achieving that GT's maximum IoU up to :data:`FORCE_MATCH_TOLERANCE`, provided the maximum
  is > 0). A positive regresses to the GT it overlaps most (for a force-matched anchor that is usually, but
  not always, the GT it was forced by, as in OpenPCDet);
- negative (background): max IoU < ``unmatched_iou``;
- ignored: everything else (``unmatched_iou <= IoU < matched_iou``, not a best anchor).

Ignore regions turn would-be negatives into ignored anchors (never positives into anything else):

- **related-class boxes** (``ignore_boxes`` with ``ignore_classes``; KITTI's Van for Car and Person_sitting for
  Pedestrian under the grid's default ``related_classes: ignore``, see :func:`ground_truth_from_labels`): a background anchor of class ``k`` whose nearest-axis BEV
  IoU with an ignore box of class ``k`` is >= class ``k``'s ``unmatched_iou`` becomes ignored, i.e. exactly
  the anchors that would not have been negatives had the box been a GT of class ``k``;
- **DontCare regions** (``dontcare_boxes``, all classes): a background anchor whose centre lies inside the
  (rotated) BEV footprint of the box becomes ignored. KITTI's DontCare labels carry no 3D box (dimensions -1,
  location -1000): :func:`ground_truth_from_labels` skips those, and excluding them is left to image-space
  handling by the caller; only a DontCare with a real 3D box reaches the assigner.

Label encoding (per anchor, long): ``0..C-1`` = positive of that class (always the anchor's own class),
``C`` = background (negative), :data:`IGNORE` (-1) = ignored. So ``one_hot(labels.clamp(min=0), C + 1)[..., :C]``
is the focal-loss target and ``labels >= 0`` is the classification weight mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from stereodistill.geometry.bev import points_in_bev_boxes
from stereodistill.head.anchors import RELATED_MERGED, AnchorGrid
from stereodistill.head.box_coder import CODE_SIZE, direction_target, encode_boxes, limit_period

IGNORE = -1

# Anchors whose IoU with a GT is within this of the GT's best IoU share the force match: equal overlaps computed
# at different grid positions can differ by float32 rounding.
FORCE_MATCH_TOLERANCE = 1e-6

# KITTI types related to a grid class: ignore regions for its anchors, or boxes of it (grid.related_classes).
RELATED_CLASS: dict[str, str] = {"Van": "Car", "Person_sitting": "Pedestrian"}
DONT_CARE = "DontCare"


# ---------------------------------------------------------------------- ground truth of one frame
def _as_boxes(value: Tensor | np.ndarray | Sequence | None, device: torch.device | None = None) -> Tensor:
    """Float32 boxes ``(N, 7)`` from a tensor, array or nested list; ``None`` gives ``(0, 7)``."""
    if value is None:
        return torch.zeros(0, 7, device=device)
    return torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1, 7)


@dataclass(frozen=True)
class FrameGroundTruth:
    """What the assigner needs of one frame (project frame, metres).

    ``boxes (G, 7)`` with ``classes (G,)`` long in ``0..C-1`` (grid class ids); ``ignore_boxes (I, 7)`` with
    ``ignore_classes (I,)`` long, the grid class whose anchors each box makes ignored; ``dontcare_boxes (D, 7)``
    making anchors of every class ignored where their centre falls inside.
    """

    boxes: Tensor
    classes: Tensor
    ignore_boxes: Tensor
    ignore_classes: Tensor
    dontcare_boxes: Tensor

    @classmethod
    def from_boxes(
        cls,
        boxes: Tensor,
        classes: Tensor,
        ignore_boxes: Tensor | None = None,
        ignore_classes: Tensor | None = None,
        dontcare_boxes: Tensor | None = None,
    ) -> FrameGroundTruth:
        """Fill absent ignore / DontCare inputs with empty tensors and check shapes."""
        boxes = _as_boxes(boxes)
        device = boxes.device
        classes = torch.as_tensor(classes, dtype=torch.long, device=device).reshape(-1)
        ib = _as_boxes(ignore_boxes, device)
        ic_values = [] if ignore_classes is None else ignore_classes
        ic = torch.as_tensor(ic_values, dtype=torch.long, device=device).reshape(-1)
        dc = _as_boxes(dontcare_boxes, device)
        if classes.shape[0] != boxes.shape[0]:
            raise ValueError(f"{boxes.shape[0]} GT boxes but {classes.shape[0]} class ids")
        if ic.shape[0] != ib.shape[0]:
            raise ValueError(f"{ib.shape[0]} ignore boxes but {ic.shape[0]} ignore class ids")
        return cls(boxes, classes, ib, ic, dc)

    def to(self, device: torch.device | str) -> FrameGroundTruth:
        """The same ground truth with every tensor on ``device``."""
        return FrameGroundTruth(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))


def ground_truth_from_labels(
    names: Sequence[str], boxes: np.ndarray | Tensor, grid: AnchorGrid
) -> FrameGroundTruth:
    """Map a frame's labelled objects (KITTI type names and project boxes ``(N, 7)``) to assigner inputs.

    The one rule every trainer and the teacher cache's coverage use:

    - a name among the grid's classes -> GT box of that class id;
    - ``Van`` / ``Person_sitting`` (:data:`RELATED_CLASS`), when ``Car`` / ``Pedestrian`` is in the grid: with
      ``grid.related_classes == "ignore"`` an ignore box for that class, with ``"merge"`` (LIGA-Stereo) a GT box
      of that class, in label order among the others;
    - ``DontCare`` -> DontCare region if it has a real 3D box (all of ``l, w, h`` > 0), else dropped (KITTI's
      DontCare has dimensions -1: handle those in image space);
    - anything else (Truck, Tram, Misc, ...) is dropped: its anchors may be negatives, as in KITTI training.
    """
    box_array = _as_boxes(boxes)
    if len(names) != box_array.shape[0]:
        raise ValueError(f"{len(names)} names but {box_array.shape[0]} boxes")
    index = {name: i for i, name in enumerate(grid.class_names)}
    merge = grid.related_classes == RELATED_MERGED
    gt, gt_cls, ign, ign_cls, dontcare = [], [], [], [], []
    for i, name in enumerate(names):
        if name in index:
            gt.append(i)
            gt_cls.append(index[name])
        elif name in RELATED_CLASS and RELATED_CLASS[name] in index:
            (gt if merge else ign).append(i)
            (gt_cls if merge else ign_cls).append(index[RELATED_CLASS[name]])
        elif name == DONT_CARE and bool(torch.all(box_array[i, 3:6] > 0)):
            dontcare.append(i)
    return FrameGroundTruth.from_boxes(
        box_array[gt],
        torch.tensor(gt_cls, dtype=torch.long),
        box_array[ign],
        torch.tensor(ign_cls, dtype=torch.long),
        box_array[dontcare],
    )


# ---------------------------------------------------------------------- nearest-axis BEV IoU
def nearest_axis_bev_rects(boxes: Tensor) -> Tensor:
    """Axis-aligned BEV rectangles ``(N, 4)`` ``x1, y1, x2, y2`` of project boxes ``(N, 7)``.

    A box whose heading (mod pi) is nearer pi/2 than 0 swaps ``l`` and ``w``; at exactly pi/4 it does not.
    """
    heading = torch.abs(limit_period(boxes[:, 6], 0.5, math.pi))
    swap = heading > math.pi / 4
    half_x = torch.where(swap, boxes[:, 4], boxes[:, 3]) / 2
    half_y = torch.where(swap, boxes[:, 3], boxes[:, 4]) / 2
    return torch.stack(
        [boxes[:, 0] - half_x, boxes[:, 1] - half_y, boxes[:, 0] + half_x, boxes[:, 1] + half_y], dim=-1
    )


def rect_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU ``(N, M)`` of axis-aligned rectangles ``(N, 4)`` and ``(M, 4)`` (``x1, y1, x2, y2``)."""
    iw = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp_(
        min=0
    )
    ih = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp_(
        min=0
    )
    inter = iw.mul_(ih)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = (area_a[:, None] + area_b[None, :]) - inter
    return inter.div_(union.clamp_(min=1e-12))


def nearest_axis_bev_iou(a: Tensor, b: Tensor) -> Tensor:
    """BEV IoU ``(N, M)`` of project boxes ``(N, 7)`` and ``(M, 7)`` after snapping headings to the nearest axis."""
    return rect_iou(nearest_axis_bev_rects(a), nearest_axis_bev_rects(b))


# ---------------------------------------------------------------------- targets
@dataclass(frozen=True)
class AssignedTargets:
    """Per-anchor training targets, in the grid's anchor order (leading ``B`` when batched).

    - ``labels (.., N)`` long: ``0..C-1`` positive class, ``C`` background, ``IGNORE`` (-1) ignored;
    - ``matched_gt (.., N)`` long: index of the regressed GT box in the frame's ``boxes``, -1 unless positive;
    - ``box_targets (.., N, 7)``: residual codes (:func:`encode_boxes`) of the matched GT, zero unless positive;
    - ``dir_targets (.., N)`` long: direction bin of the matched GT's heading, -1 unless positive.
    """

    labels: Tensor
    matched_gt: Tensor
    box_targets: Tensor
    dir_targets: Tensor
    num_classes: int

    @property
    def positive(self) -> Tensor:
        return (self.labels >= 0) & (self.labels < self.num_classes)

    @property
    def negative(self) -> Tensor:
        return self.labels == self.num_classes

    @property
    def ignored(self) -> Tensor:
        return self.labels == IGNORE

    def to(self, device: torch.device | str, non_blocking: bool = False) -> AssignedTargets:
        """The same targets on ``device``."""
        return AssignedTargets(
            labels=self.labels.to(device, non_blocking=non_blocking),
            matched_gt=self.matched_gt.to(device, non_blocking=non_blocking),
            box_targets=self.box_targets.to(device, non_blocking=non_blocking),
            dir_targets=self.dir_targets.to(device, non_blocking=non_blocking),
            num_classes=self.num_classes,
        )

    @staticmethod
    def stack(frames: Sequence[AssignedTargets]) -> AssignedTargets:
        """Stack per-frame targets into a batch (leading dim ``B``)."""
        if not frames:
            raise ValueError("cannot stack an empty list of targets")
        return AssignedTargets(
            labels=torch.stack([f.labels for f in frames]),
            matched_gt=torch.stack([f.matched_gt for f in frames]),
            box_targets=torch.stack([f.box_targets for f in frames]),
            dir_targets=torch.stack([f.dir_targets for f in frames]),
            num_classes=frames[0].num_classes,
        )


@dataclass(frozen=True)
class _GridTensors:
    anchors: Tensor  # (N, 7)
    class_anchors: tuple[Tensor, ...]  # per class (ny*nx*R, 7), contiguous
    class_rects: tuple[Tensor, ...]  # per class (ny*nx*R, 4)


class TargetAssigner:
    """Assigns training targets on one :class:`AnchorGrid` (see the module docstring for the rules).

    Anchors are built once per device and reused; inputs may live on any device (outputs follow them).
    """

    def __init__(self, grid: AnchorGrid) -> None:
        self.grid = grid
        self._cache: dict[torch.device, _GridTensors] = {}

    def _tensors(self, device: torch.device) -> _GridTensors:
        if device not in self._cache:
            g = self.grid
            anchors = g.shared_anchors(device)
            per_cell = anchors.view(g.ny * g.nx, g.num_classes, g.num_rotations, 7)
            class_anchors = tuple(per_cell[:, c].reshape(-1, 7).contiguous() for c in range(g.num_classes))
            rects = tuple(nearest_axis_bev_rects(a) for a in class_anchors)
            self._cache[device] = _GridTensors(anchors, class_anchors, rects)
        return self._cache[device]

    def _anchors_near(self, class_id: int, rects: Tensor, device: torch.device) -> Tensor:
        """Indices (ascending, into the class's ``(ny*nx*R,)`` anchors) of anchors that may overlap ``rects (K, 4)``.

        Conservative: an anchor of any rotation reaches at most ``max(l, w) / 2`` from its cell centre, so a cell
        is kept when its centre lies within that reach of a rectangle (rounded outwards to whole cells).
        """
        g = self.grid
        x0, y0, cell = g.point_cloud_range[0], g.point_cloud_range[1], g.bev_cell_size
        reach = max(g.classes[class_id].size[:2]) / 2
        cell_mask = torch.zeros(g.ny, g.nx, dtype=torch.bool)
        for x1, y1, x2, y2 in rects.tolist():
            ix_lo = max(0, math.floor((x1 - reach - x0) / cell - 0.5))
            ix_hi = min(g.nx - 1, math.ceil((x2 + reach - x0) / cell - 0.5))
            iy_lo = max(0, math.floor((y1 - reach - y0) / cell - 0.5))
            iy_hi = min(g.ny - 1, math.ceil((y2 + reach - y0) / cell - 0.5))
            if ix_lo <= ix_hi and iy_lo <= iy_hi:
                cell_mask[iy_lo : iy_hi + 1, ix_lo : ix_hi + 1] = True
        cells = torch.nonzero(cell_mask.flatten()).flatten().to(device)
        rotations = torch.arange(g.num_rotations, device=device)
        return (cells[:, None] * g.num_rotations + rotations[None, :]).flatten()

    def assign(
        self,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        ignore_boxes: Tensor | None = None,
        ignore_classes: Tensor | None = None,
        dontcare_boxes: Tensor | None = None,
    ) -> AssignedTargets:
        """Targets of one frame: GT ``(G, 7)`` with class ids ``(G,)`` in ``0..C-1``, optional ignore regions."""
        gt = FrameGroundTruth.from_boxes(gt_boxes, gt_classes, ignore_boxes, ignore_classes, dontcare_boxes)
        return self.assign_frame(gt)

    def assign_batch(self, frames: Sequence[FrameGroundTruth]) -> AssignedTargets:
        """Targets of ``B`` frames stacked: ``labels (B, N)``, ``box_targets (B, N, 7)``, ..."""
        return AssignedTargets.stack([self.assign_frame(f) for f in frames])

    def assign_frame(self, gt: FrameGroundTruth) -> AssignedTargets:
        g = self.grid
        num_classes, device = g.num_classes, gt.boxes.device
        t = self._tensors(device)
        if gt.classes.numel() and (int(gt.classes.min()) < 0 or int(gt.classes.max()) >= num_classes):
            raise ValueError(f"GT class ids must lie in 0..{num_classes - 1}, got {gt.classes.tolist()}")
        if gt.ignore_classes.numel() and (
            int(gt.ignore_classes.min()) < 0 or int(gt.ignore_classes.max()) >= num_classes
        ):
            raise ValueError(
                f"ignore class ids must lie in 0..{num_classes - 1}, got {gt.ignore_classes.tolist()}"
            )
        for name, boxes in (("GT", gt.boxes), ("ignore", gt.ignore_boxes), ("DontCare", gt.dontcare_boxes)):
            if not bool(torch.isfinite(boxes).all()):
                raise ValueError(f"{name} boxes contain NaN or inf")
        cells, rots = g.ny * g.nx, g.num_rotations
        labels = torch.full((cells, num_classes, rots), num_classes, dtype=torch.long, device=device)
        matched = torch.full((cells, num_classes, rots), -1, dtype=torch.long, device=device)
        gt_boxes = gt.boxes.to(t.anchors.dtype)
        gt_rects = nearest_axis_bev_rects(gt_boxes)
        ignore_rects = nearest_axis_bev_rects(gt.ignore_boxes.to(t.anchors.dtype))
        dontcare = gt.dontcare_boxes.to(t.anchors.dtype)
        for c, spec in enumerate(g.classes):
            cls_labels = labels[:, c, :].reshape(-1).clone()
            cls_matched = matched[:, c, :].reshape(-1).clone()
            gt_ids = torch.nonzero(gt.classes == c).flatten()
            ignore_ids = torch.nonzero(gt.ignore_classes == c).flatten()
            # Only anchors near some box can have IoU > 0; all others stay background.
            near = self._anchors_near(c, torch.cat([gt_rects[gt_ids], ignore_rects[ignore_ids]]), device)
            rects = t.class_rects[c][near]
            if gt_ids.numel() and near.numel():
                iou = rect_iou(rects, gt_rects[gt_ids])  # (K, G_c)
                best_iou, best_gt = iou.max(dim=1)
                gt_best = iou.max(dim=0).values
                tied_best = iou >= gt_best[None, :] - FORCE_MATCH_TOLERANCE
                forced = (tied_best & (gt_best[None, :] > 0)).any(dim=1)
                positive = (best_iou >= spec.matched_iou) | forced
                cls_labels[near[(best_iou >= spec.unmatched_iou) & ~positive]] = IGNORE
                cls_labels[near[positive]] = c
                cls_matched[near[positive]] = gt_ids[best_gt[positive]]
            if ignore_ids.numel() and near.numel():
                overlaps = rect_iou(rects, ignore_rects[ignore_ids]).max(dim=1).values >= spec.unmatched_iou
                demoted = near[overlaps & (cls_labels[near] == num_classes)]
                cls_labels[demoted] = IGNORE
            if dontcare.shape[0]:
                in_dontcare = points_in_bev_boxes(t.class_anchors[c][:, :2], dontcare)
                cls_labels[in_dontcare & (cls_labels == num_classes)] = IGNORE
            labels[:, c, :] = cls_labels.view(cells, rots)
            matched[:, c, :] = cls_matched.view(cells, rots)
        labels, matched = labels.reshape(-1), matched.reshape(-1)
        box_targets = torch.zeros(labels.shape[0], CODE_SIZE, dtype=t.anchors.dtype, device=device)
        dir_targets = torch.full_like(labels, -1)
        pos = torch.nonzero(matched >= 0).flatten()
        if pos.numel():
            matched_boxes = gt_boxes[matched[pos]]
            box_targets[pos] = encode_boxes(matched_boxes, t.anchors[pos])
            dir_targets[pos] = direction_target(matched_boxes[:, 6])
        return AssignedTargets(labels, matched, box_targets, dir_targets, num_classes)
