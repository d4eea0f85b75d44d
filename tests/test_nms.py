"""Rotated NMS: hand-built sets, threshold semantics, and a shapely-based naive greedy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
import torch
from shapely.geometry import Polygon

from stereodistill.geometry.nms import batched_rotated_nms, rotated_nms

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def box(x, y, l=1.0, w=1.0, heading=0.0) -> list[float]:
    return [x, y, 0.0, l, w, 1.5, heading]


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def polygon(b: np.ndarray) -> Polygon:
    x, y, _, l, w, _, heading = (float(v) for v in b)
    c, s = math.cos(heading), math.sin(heading)
    local = ((l / 2, w / 2), (-l / 2, w / 2), (-l / 2, -w / 2), (l / 2, -w / 2))
    return Polygon([(x + u * c - v * s, y + u * s + v * c) for u, v in local])


def naive_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, labels=None) -> list[int]:
    """Textbook greedy NMS with shapely IoU: visit by score (ties by index), keep unless IoU > threshold."""
    polys = np.array([polygon(b) for b in boxes.double().numpy()])
    areas = shapely.area(polys)
    order = sorted(range(len(polys)), key=lambda i: (-float(scores[i]), i))
    kept: list[int] = []
    for i in order:
        suppressed = False
        for k in kept:
            if labels is not None and int(labels[k]) != int(labels[i]):
                continue
            inter = shapely.area(shapely.intersection(polys[k], polys[i]))
            if inter / (areas[k] + areas[i] - inter) > threshold:
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    return kept


def clustered_boxes(n: int, objects: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Detections jittered around ``objects`` car-sized boxes in a 70 m x 80 m area, random scores."""
    centres = torch.rand(objects, 2, generator=gen, dtype=torch.float64) * torch.tensor([70.0, 80.0])
    centres[:, 1] -= 40
    headings = (torch.rand(objects, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    which = torch.randint(0, objects, (n,), generator=gen)
    xy = centres[which] + torch.randn(n, 2, generator=gen, dtype=torch.float64) * 0.6
    z = torch.randn(n, 1, generator=gen, dtype=torch.float64) * 0.2
    lwh = torch.tensor([3.9, 1.6, 1.56], dtype=torch.float64) * (
        1 + 0.15 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    )
    heading = headings[which] + 0.2 * torch.randn(n, generator=gen, dtype=torch.float64)
    scores = torch.rand(n, generator=gen)
    return torch.cat([xy, z, lwh, heading[:, None]], dim=1).float(), scores


def test_overlapping_pair_keeps_the_higher_score() -> None:
    boxes = t(box(10, 0), box(10.2, 0), box(20, 0))
    keep = rotated_nms(boxes, torch.tensor([0.3, 0.9, 0.5]), 0.5)
    assert keep.tolist() == [1, 2]
    assert keep.dtype == torch.int64


def test_disjoint_boxes_all_kept_in_score_order() -> None:
    boxes = t(box(0, 0), box(5, 0), box(0, 5), box(1, 0))  # last one touches the first
    keep = rotated_nms(boxes, torch.tensor([0.1, 0.7, 0.4, 0.9]), 0.0)
    assert keep.tolist() == [3, 1, 2, 0]


def test_threshold_is_strict() -> None:
    # Unit squares offset by 0.5: IoU exactly 1/3.
    boxes = t(box(0, 0), box(0.5, 0))
    scores = torch.tensor([0.9, 0.8])
    assert rotated_nms(boxes, scores, 1 / 3).tolist() == [0, 1]
    assert rotated_nms(boxes, scores, 0.33).tolist() == [0]
    # Identical boxes: IoU exactly 1, which does not exceed a threshold of 1.
    same = t(box(50, 10, 4, 2, 0.3), box(50, 10, 4, 2, 0.3))
    assert rotated_nms(same, scores, 1.0).tolist() == [0, 1]
    assert rotated_nms(same, scores, 0.999).tolist() == [0]


def test_equal_scores_break_ties_by_lower_index() -> None:
    boxes = t(box(30, 0), box(0, 0), box(30.1, 0), box(0.1, 0))
    keep = rotated_nms(boxes, torch.full((4,), 0.5), 0.5)
    assert keep.tolist() == [0, 1]


def test_suppression_is_not_transitive() -> None:
    # a suppresses b, b would suppress c, but a and c do not overlap enough: c survives.
    boxes = t(box(0, 0, 2, 1), box(0.8, 0, 2, 1), box(1.6, 0, 2, 1))
    keep = rotated_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.3)
    assert keep.tolist() == [0, 2]


def test_rotation_matters() -> None:
    # Same centre, long thin boxes crossing at 90 degrees: IoU 1/7 (crossing square 0.25, union 1.75).
    boxes = t(box(0, 0, 2, 0.5, 0.0), box(0, 0, 2, 0.5, math.pi / 2))
    scores = torch.tensor([0.9, 0.8])
    assert rotated_nms(boxes, scores, 0.2).tolist() == [0, 1]
    assert rotated_nms(boxes, scores, 0.1).tolist() == [0]


def test_class_aware_keeps_cross_class_overlaps() -> None:
    boxes = t(box(0, 0), box(0.1, 0), box(0.2, 0), box(9, 9))
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 1, 0, 1])
    assert rotated_nms(boxes, scores, 0.5).tolist() == [0, 3]
    assert batched_rotated_nms(boxes, scores, labels, 0.5).tolist() == [0, 1, 3]
    assert batched_rotated_nms(boxes, scores, labels, 0.5, max_output=2).tolist() == [0, 1]


def test_max_output() -> None:
    boxes = t(*[box(3.0 * i, 0) for i in range(10)])
    scores = torch.linspace(0.1, 1.0, 10)
    assert rotated_nms(boxes, scores, 0.5, max_output=3).tolist() == [9, 8, 7]
    assert rotated_nms(boxes, scores, 0.5, max_output=0).tolist() == []
    assert len(rotated_nms(boxes, scores, 0.5, max_output=100)) == 10


def test_empty_input() -> None:
    keep = rotated_nms(torch.zeros(0, 7), torch.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64
    assert batched_rotated_nms(
        torch.zeros(0, 7), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.1
    ).shape == (0,)


def test_bad_inputs_raise() -> None:
    boxes = t(box(0, 0), box(1, 1))
    with pytest.raises(ValueError, match="scores"):
        rotated_nms(boxes, torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        rotated_nms(boxes, torch.tensor([0.5, float("nan")]), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        rotated_nms(boxes, torch.zeros(2), -0.1)
    with pytest.raises(ValueError, match="boxes"):
        rotated_nms(torch.zeros(2, 5), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="labels"):
        batched_rotated_nms(boxes, torch.zeros(2), torch.zeros(3), 0.5)


@pytest.mark.parametrize("threshold", [0.01, 0.1, 0.25, 0.5, 0.7])
def test_matches_naive_shapely_reference(threshold: float) -> None:
    gen = torch.Generator().manual_seed(int(threshold * 100))
    boxes, scores = clustered_boxes(200, 12, gen)
    scores[::7] = 0.5  # some exact ties
    expected = naive_nms(boxes, scores, threshold)
    for block_size in (1, 13, 256):
        assert rotated_nms(boxes, scores, threshold, block_size=block_size).tolist() == expected


@pytest.mark.parametrize("threshold", [0.1, 0.5])
def test_class_aware_matches_naive_shapely_reference(threshold: float) -> None:
    gen = torch.Generator().manual_seed(42)
    boxes, scores = clustered_boxes(200, 10, gen)
    labels = torch.randint(0, 3, (200,), generator=gen)
    expected = naive_nms(boxes, scores, threshold, labels)
    assert batched_rotated_nms(boxes, scores, labels, threshold, block_size=16).tolist() == expected
    assert batched_rotated_nms(boxes, scores, labels, threshold, max_output=5).tolist() == expected[:5]


@CUDA
def test_cuda_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(3)
    boxes, scores = clustered_boxes(3000, 30, gen)
    labels = torch.randint(0, 3, (3000,), generator=gen)
    for threshold in (0.01, 0.25, 0.7):
        cpu = rotated_nms(boxes, scores, threshold)
        gpu = rotated_nms(boxes.cuda(), scores.cuda(), threshold)
        assert gpu.device.type == "cuda"
        assert gpu.cpu().tolist() == cpu.tolist()
        cpu_c = batched_rotated_nms(boxes, scores, labels, threshold, max_output=500)
        gpu_c = batched_rotated_nms(boxes.cuda(), scores.cuda(), labels.cuda(), threshold, max_output=500)
        assert gpu_c.cpu().tolist() == cpu_c.tolist()
