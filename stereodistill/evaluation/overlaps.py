"""Overlaps between ground-truth and detected objects of the same frame, kept as sparse pair lists.

All pairs of a frame that can matter to some evaluated class are formed (in chunks of frames, to bound
memory), the 2D IoU is computed for all of them, and the exact rotated BEV intersection
(``stereodistill.geometry.iou``) only for pairs whose BEV IoU could exceed the smallest BEV/3D threshold
in use. Pairs that overlap in no metric are dropped.

Formulas follow the devkit: 2D boxes use continuous areas ``(x2 - x1) * (y2 - y1)`` and a box pair that
does not overlap in both directions has overlap 0; BEV IoU is intersection over union of the rotated
rectangles; 3D IoU is ``bev_intersection * vertical_overlap / (vol_a + vol_b - intersection_volume)``.
BEV and 3D overlaps are computed in the project frame, which is a rigid re-axing of the camera frame, so
they equal the devkit's camera-frame values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from stereodistill.evaluation.objects import FlatObjects
from stereodistill.geometry.iou import intersection_area_bev

# Upper bound on the number of (ground truth, detection) pairs formed at once (~100 MB of temporaries).
MAX_PAIRS_PER_CHUNK = 1 << 21


@dataclass(frozen=True)
class PairOverlaps:
    """Ground-truth/detection pairs of the same frame with positive overlap in at least one metric.

    ``gt (P,)`` and ``dt (P,)`` are row indices into the flattened ground truth and detections, sorted by
    ``gt`` then ``dt``; ``bbox``, ``bev`` and ``box3d`` ``(P,)`` are the 2D, BEV and 3D IoUs.
    """

    gt: np.ndarray
    dt: np.ndarray
    bbox: np.ndarray
    bev: np.ndarray
    box3d: np.ndarray

    def metric(self, name: str) -> np.ndarray:
        return {"bbox": self.bbox, "bev": self.bev, "3d": self.box3d}[name]


def same_frame_pairs(
    gt_frame: np.ndarray,
    gt_rows: np.ndarray,
    dt_frame: np.ndarray,
    dt_rows: np.ndarray,
    max_pairs: int = MAX_PAIRS_PER_CHUNK,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield chunks ``(gt_index (P,), dt_index (P,))`` of all pairs of the given rows lying in the same frame.

    ``gt_rows`` and ``dt_rows`` are row indices (sorted ascending) into arrays whose ``*_frame`` is
    non-decreasing. Within a chunk, pairs are ordered by ground-truth row then detection row.
    """
    if gt_rows.size == 0 or dt_rows.size == 0:
        return
    num_frames = int(max(gt_frame[gt_rows].max(), dt_frame[dt_rows].max())) + 1
    gt_count = np.bincount(gt_frame[gt_rows], minlength=num_frames)
    dt_count = np.bincount(dt_frame[dt_rows], minlength=num_frames)
    gt_start = np.concatenate([[0], np.cumsum(gt_count)])
    dt_start = np.concatenate([[0], np.cumsum(dt_count)])
    pairs_before = np.concatenate([[0], np.cumsum(gt_count * dt_count)])
    frame = 0
    while frame < num_frames:
        # Extend the chunk while it stays under max_pairs (always at least one frame).
        end = int(np.searchsorted(pairs_before, pairs_before[frame] + max_pairs, side="right")) - 1
        end = min(max(end, frame + 1), num_frames)
        gts = gt_rows[gt_start[frame] : gt_start[end]]
        per_gt = dt_count[gt_frame[gts]]
        total = int(per_gt.sum())
        if total:
            first_pair_of_gt = np.cumsum(per_gt) - per_gt
            within = np.arange(total) - np.repeat(first_pair_of_gt, per_gt)
            dt_position = np.repeat(dt_start[gt_frame[gts]], per_gt) + within
            yield np.repeat(gts, per_gt), dt_rows[dt_position]
        frame = end


def image_box_overlap(a: np.ndarray, b: np.ndarray, over_first: bool = False) -> np.ndarray:
    """Overlap ``(P,)`` of paired image boxes ``a (P, 4)``, ``b (P, 4)`` (``x1, y1, x2, y2``, continuous areas).

    Intersection over union, or over the area of ``a`` when ``over_first`` (the devkit's criterion 0, used
    for detections against DontCare regions). Pairs that do not overlap in both x and y give 0.
    """
    width = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    height = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    overlapping = (width > 0) & (height > 0)
    inter = np.where(overlapping, width * height, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    if over_first:
        denominator = area_a
    else:
        denominator = area_a + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlapping, inter / denominator, 0.0)


@dataclass(frozen=True)
class _Footprints:
    """Per box: ``size (N, 3)`` (negative sizes clamped to 0), BEV ``area (N,)`` and the axis-aligned bounding
    box of the BEV rectangle ``aabb (N, 4)`` as ``x_min, y_min, x_max, y_max`` (project frame)."""

    size: np.ndarray
    area: np.ndarray
    aabb: np.ndarray

    @classmethod
    def of(cls, boxes: np.ndarray) -> _Footprints:
        size = np.clip(boxes[:, 3:6], 0.0, None)
        cos, sin = np.abs(np.cos(boxes[:, 6])), np.abs(np.sin(boxes[:, 6]))
        half_x = 0.5 * (size[:, 0] * cos + size[:, 1] * sin)
        half_y = 0.5 * (size[:, 0] * sin + size[:, 1] * cos)
        aabb = np.stack(
            [boxes[:, 0] - half_x, boxes[:, 1] - half_y, boxes[:, 0] + half_x, boxes[:, 1] + half_y], 1
        )
        return cls(size=size, area=size[:, 0] * size[:, 1], aabb=aabb)


def _bev_and_3d_iou(
    gt_boxes: np.ndarray,
    dt_boxes: np.ndarray,
    gt_footprints: _Footprints,
    dt_footprints: _Footprints,
    gi: np.ndarray,
    di: np.ndarray,
    min_iou_of_interest: float,
) -> tuple[np.ndarray, np.ndarray]:
    """BEV and 3D IoU ``(P,)`` of the pairs ``(gt_boxes[gi], dt_boxes[di])`` of project boxes ``(N, 7)``.

    Only pairs whose BEV IoU can exceed ``min_iou_of_interest`` are computed exactly (3D IoU never exceeds
    BEV IoU); the others get 0. The bound: IoU <= intersection / max(area), and the intersection is at most
    the overlap of the rectangles' axis-aligned bounding boxes, and at most min(area).
    """
    bev = np.zeros(gi.shape[0])
    box3d = np.zeros(gi.shape[0])
    area_gt, area_dt = gt_footprints.area[gi], dt_footprints.area[di]
    aabb_gt, aabb_dt = gt_footprints.aabb[gi], dt_footprints.aabb[di]
    overlap_x = np.minimum(aabb_gt[:, 2], aabb_dt[:, 2]) - np.maximum(aabb_gt[:, 0], aabb_dt[:, 0])
    overlap_y = np.minimum(aabb_gt[:, 3], aabb_dt[:, 3]) - np.maximum(aabb_gt[:, 1], aabb_dt[:, 1])
    bound = np.minimum(
        np.clip(overlap_x, 0.0, None) * np.clip(overlap_y, 0.0, None), np.minimum(area_gt, area_dt)
    )
    near = np.flatnonzero((bound > 0) & (bound > min_iou_of_interest * np.maximum(area_gt, area_dt)))
    if near.size == 0:
        return bev, box3d
    gi, di, area_gt, area_dt = gi[near], di[near], area_gt[near], area_dt[near]
    with _one_torch_thread():
        inter = intersection_area_bev(
            torch.from_numpy(gt_boxes[gi]), torch.from_numpy(dt_boxes[di]), aligned=True
        ).numpy()
    union = area_gt + area_dt - inter
    bev[near] = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    height_gt, height_dt = gt_footprints.size[gi, 2], dt_footprints.size[di, 2]
    top = np.minimum(gt_boxes[gi, 2] + 0.5 * height_gt, dt_boxes[di, 2] + 0.5 * height_dt)
    bottom = np.maximum(gt_boxes[gi, 2] - 0.5 * height_gt, dt_boxes[di, 2] - 0.5 * height_dt)
    inter_volume = inter * np.clip(top - bottom, 0.0, None)
    union_volume = area_gt * height_gt + area_dt * height_dt - inter_volume
    box3d[near] = np.where(
        union_volume > 0, inter_volume / np.where(union_volume > 0, union_volume, 1.0), 0.0
    )
    return bev, box3d


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch single-threaded: chunks here are small, and on a busy machine intra-op threads spin-wait
    (measured 15x slower with 2 threads on a loaded 2-core machine, vs 2x faster when idle)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def ground_truth_detection_overlaps(
    gt: FlatObjects,
    dt: FlatObjects,
    gt_groups: np.ndarray,
    dt_groups: np.ndarray,
    min_iou_of_interest: float = 0.0,
) -> PairOverlaps:
    """Pairs (same frame) of ground truth and detections that can matter, with their overlaps.

    ``gt_groups (Ng,)`` and ``dt_groups (Nd,)`` are bit masks of the evaluated classes an object can take
    part in (0: none); a pair is formed only when they share a bit. BEV/3D IoUs that cannot exceed
    ``min_iou_of_interest`` (the smallest BEV/3D threshold in use) are recorded as 0.
    """
    parts: list[tuple[np.ndarray, ...]] = []
    gt_rows, dt_rows = np.flatnonzero(gt_groups), np.flatnonzero(dt_groups)
    gt_footprints, dt_footprints = _Footprints.of(gt.boxes), _Footprints.of(dt.boxes)
    for gi_all, di_all in same_frame_pairs(gt.frame, gt_rows, dt.frame, dt_rows):
        related = (gt_groups[gi_all] & dt_groups[di_all]) != 0
        gi, di = gi_all[related], di_all[related]
        bbox = image_box_overlap(gt.bbox[gi], dt.bbox[di])
        bev, box3d = _bev_and_3d_iou(
            gt.boxes, dt.boxes, gt_footprints, dt_footprints, gi, di, min_iou_of_interest
        )
        keep = (bbox > 0) | (bev > 0) | (box3d > 0)
        parts.append((gi[keep], di[keep], bbox[keep], bev[keep], box3d[keep]))
    if not parts:
        empty_index, empty = np.zeros(0, dtype=np.int64), np.zeros(0)
        return PairOverlaps(empty_index, empty_index, empty, empty, empty)
    gi, di, bbox, bev, box3d = (np.concatenate(column) for column in zip(*parts, strict=True))
    return PairOverlaps(gi, di, bbox, bev, box3d)


def dontcare_coverage(gt: FlatObjects, dt: FlatObjects, dt_rows: np.ndarray) -> np.ndarray:
    """Per detection ``(Nd,)``: the largest fraction of its image box covered by one DontCare region of its frame.

    Only detections in ``dt_rows`` are computed; the others (and detections in frames without DontCare) get 0.
    """
    coverage = np.zeros(len(dt))
    dontcare_rows = np.flatnonzero(gt.types == "DontCare")
    for gi, di in same_frame_pairs(gt.frame, dontcare_rows, dt.frame, dt_rows):
        np.maximum.at(coverage, di, image_box_overlap(dt.bbox[di], gt.bbox[gi], over_first=True))
    return coverage
