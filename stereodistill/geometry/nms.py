"""Greedy non-maximum suppression on exact rotated BEV IoU, class-agnostic or class-aware.

Semantics (those of OpenPCDet's ``nms_gpu``): boxes are visited in descending score order (equal scores:
lower input index first); a box is kept unless a box kept before it has ``IoU_BEV > iou_threshold``
(strictly greater: a pair at exactly the threshold does not suppress).

The result equals the plain sequential greedy loop, but IoU is only computed where it can matter. Boxes
are taken in score-ordered blocks; each block is first tested against the boxes kept so far, then the
survivors are resolved greedily among themselves. Only pairs whose BEV bounding circles overlap, whose
area ratio does not already bound their IoU by the threshold (and, for the class-aware variant, whose
labels agree) ever reach the exact IoU, so clustered detections cost about (number of boxes) x (boxes kept
near each one) IoU evaluations rather than N^2. The worst case, many mutually overlapping boxes of similar
size that nearly all survive (a threshold close to 1), still needs ~N^2 / 2 evaluations (about 1 us each on
one CPU core).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from stereodistill.geometry.iou import bev_candidate_mask, iou_bev

# Boxes resolved per greedy block. Larger blocks mean fewer rounds but more intra-block pairs.
DEFAULT_BLOCK_SIZE = 256


def rotated_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float,
    max_output: int | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Tensor:
    """Class-agnostic greedy NMS of project boxes on BEV rotated IoU.

    ``boxes (N, 7)`` project boxes (extra columns ignored), ``scores (N,)``. A box is suppressed by a
    higher-ranked kept box when their ``IoU_BEV > iou_threshold``. Returns the kept indices into ``boxes``
    as an int64 tensor ``(K,)`` on the boxes' device, in descending score order (ties: lower index first),
    at most ``max_output`` of them (``None``: no limit).
    """
    return _greedy_nms(boxes, scores, None, iou_threshold, max_output, block_size)


def batched_rotated_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    iou_threshold: float,
    max_output: int | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Tensor:
    """Class-aware :func:`rotated_nms`: boxes with different ``labels (N,)`` never suppress each other.

    Returns the kept indices ``(K,)`` of all classes merged, in descending score order; ``max_output``
    caps the total, not the count per class.
    """
    if not isinstance(labels, Tensor) or labels.shape != (boxes.shape[0],):
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a tensor of shape ({boxes.shape[0]},), got {shape}")
    return _greedy_nms(boxes, scores, labels, iou_threshold, max_output, block_size)


def _check_inputs(
    boxes: Tensor, scores: Tensor, iou_threshold: float, max_output: int | None, block_size: int
) -> float:
    """Raise ValueError on malformed arguments; return the threshold as a Python float."""
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] < 7:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a tensor of shape (N, 7), got {shape}")
    if not isinstance(scores, Tensor) or scores.shape != (boxes.shape[0],):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a tensor of shape ({boxes.shape[0]},), got {shape}")
    if scores.device != boxes.device:
        raise ValueError(f"scores are on {scores.device} but boxes on {boxes.device}")
    try:
        threshold = float(iou_threshold)
    except (TypeError, ValueError):
        threshold = math.nan
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"iou_threshold must be a finite number >= 0, got {iou_threshold!r}")
    if max_output is not None and max_output < 0:
        raise ValueError(f"max_output must be >= 0 or None, got {max_output}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    return threshold


def _candidates(earlier: Tensor, later: Tensor, threshold: float) -> Tensor:
    """``(E, L)`` bool: pairs that may have ``IoU_BEV > threshold``; False ones provably do not.

    Besides overlapping bounding circles, ``IoU <= min(area) / max(area)`` (the intersection is at most the
    smaller box, the union at least the larger), so pairs whose area ratio is at most the threshold cannot
    suppress. This prunes most pairs at high thresholds. The small margin keeps pairs whose computed IoU
    could round to just above the threshold.
    """
    mask = bev_candidate_mask(earlier, later)
    area_earlier = earlier[:, 3].clamp(min=0) * earlier[:, 4].clamp(min=0)
    area_later = later[:, 3].clamp(min=0) * later[:, 4].clamp(min=0)
    smaller = torch.minimum(area_earlier[:, None], area_later[None, :])
    larger = torch.maximum(area_earlier[:, None], area_later[None, :])
    mask &= smaller > larger * (threshold * (1 - 1e-9))
    return mask


def _suppressed_by(
    earlier: Tensor,
    later: Tensor,
    earlier_labels: Tensor | None,
    later_labels: Tensor | None,
    threshold: float,
) -> tuple[Tensor, Tensor]:
    """Pairs ``(i, j)`` with ``IoU_BEV(earlier[i], later[j]) > threshold``, as two index tensors."""
    mask = _candidates(earlier, later, threshold)
    if earlier_labels is not None and later_labels is not None:
        mask &= earlier_labels[:, None] == later_labels[None, :]
    return _pairs_above(earlier, later, mask, threshold)


def _pairs_above(a: Tensor, b: Tensor, mask: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    ia, ib = torch.nonzero(mask, as_tuple=True)
    if ia.numel() == 0:
        return ia, ib
    above = iou_bev(a[ia], b[ib], aligned=True) > threshold
    return ia[above], ib[above]


@torch.no_grad()
def _greedy_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor | None,
    iou_threshold: float,
    max_output: int | None,
    block_size: int,
) -> Tensor:
    iou_threshold = _check_inputs(boxes, scores, iou_threshold, max_output, block_size)
    device = boxes.device
    n = boxes.shape[0]
    limit = n if max_output is None else min(n, max_output)
    if limit == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)

    order = torch.sort(scores, descending=True, stable=True).indices
    # float64 once here, so the per-block IoU calls do not convert again.
    sorted_boxes = boxes[order, :7].to(torch.float64)
    sorted_labels = None if labels is None else labels.to(device)[order]
    removed = torch.zeros(n, dtype=torch.bool, device=device)
    kept_blocks: list[Tensor] = []  # positions in sorted order
    kept_count = 0

    for start in range(0, n, block_size):
        stop = min(n, start + block_size)
        block = sorted_boxes[start:stop]
        block_labels = None if sorted_labels is None else sorted_labels[start:stop]
        # 1. Suppression by boxes kept in earlier blocks.
        if kept_count:
            kept = torch.cat(kept_blocks)
            kept_labels = None if sorted_labels is None else sorted_labels[kept]
            _, hit = _suppressed_by(sorted_boxes[kept], block, kept_labels, block_labels, iou_threshold)
            removed[start + hit] = True
        # 2. Greedy among the block's survivors.
        survivors = start + torch.nonzero(~removed[start:stop]).squeeze(1)
        if survivors.numel() == 0:
            continue
        survivor_boxes = sorted_boxes[survivors]
        survivor_labels = None if sorted_labels is None else sorted_labels[survivors]
        mask = _candidates(survivor_boxes, survivor_boxes, iou_threshold).triu_(diagonal=1)
        if survivor_labels is not None:
            mask &= survivor_labels[:, None] == survivor_labels[None, :]
        first, second = _pairs_above(survivor_boxes, survivor_boxes, mask, iou_threshold)
        keep_local = _sequential_greedy(
            survivors.numel(), first.cpu().numpy(), second.cpu().numpy(), limit - kept_count
        )
        keep_local_t = torch.as_tensor(keep_local, dtype=torch.int64, device=device)
        newly_kept = survivors[keep_local_t]
        kept_blocks.append(newly_kept)
        kept_count += newly_kept.numel()
        if kept_count >= limit:
            break

    if not kept_blocks:
        return torch.zeros(0, dtype=torch.int64, device=device)
    return order[torch.cat(kept_blocks)]


def _sequential_greedy(count: int, first: np.ndarray, second: np.ndarray, limit: int) -> np.ndarray:
    """Greedy pass over ``count`` ranked boxes given the suppressing pairs ``first[k] < second[k]``.

    Returns the kept local indices (ascending), at most ``limit``.
    """
    alive = np.ones(count, dtype=bool)
    if first.size:
        # Group the suppression pairs by their higher-ranked box.
        by_first = np.argsort(first, kind="stable")
        first, second = first[by_first], second[by_first]
        starts = np.searchsorted(first, np.arange(count + 1))
    kept: list[int] = []
    for i in range(count):
        if not alive[i]:
            continue
        kept.append(i)
        if len(kept) >= limit:
            break
        if first.size:
            alive[second[starts[i] : starts[i + 1]]] = False
    return np.asarray(kept, dtype=np.int64)
