"""Views of a scene: mirroring points and boxes, and the ground truth each view shows (the cache writer's and the
student's agree box for box)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from grids import small_grid

from stereodistill.cache.reader import TeacherCache
from stereodistill.cache.writer import frame_inputs
from stereodistill.data.prepared import FrameLabels, PreparedSplit
from stereodistill.geometry.boxes import points_in_boxes
from stereodistill.geometry.views import (
    HFLIP,
    IDENTITY,
    KNOWN_VIEWS,
    boxes_in_view,
    mirror_boxes,
    mirror_points,
    points_in_view,
    view_ground_truth,
)
from stereodistill.head.assigner import TargetAssigner, ground_truth_from_labels
from stereodistill.student.dataset import StudentFrames

CLASSES = ("Car", "Pedestrian", "Cyclist")
GRID = small_grid(8.0, 4.0, CLASSES)  # only its classes and related-class rule matter here


def _labels(types: list[str], boxes: np.ndarray) -> FrameLabels:
    g = len(types)
    return FrameLabels(
        types=np.array(types),
        boxes=np.asarray(boxes, dtype=np.float32),
        truncated=np.zeros(g),
        occluded=np.zeros(g, np.int8),
        alpha=np.zeros(g),
        bbox=np.zeros((g, 4)),
        dimensions=np.zeros((g, 3)),
        location=np.zeros((g, 3)),
        rotation_y=np.zeros(g),
        score=np.full(g, np.nan),
    )


# ------------------------------------------------------------------------------------------ mirroring
def test_mirror_points_negates_y_only_and_twice_is_the_identity() -> None:
    points = np.array([[10.0, 2.0, -1.0, 0.5], [5.0, -3.5, 0.2, 0.9]], dtype=np.float32)
    before = points.copy()
    out = mirror_points(points)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([[10.0, -2.0, -1.0, 0.5], [5.0, 3.5, 0.2, 0.9]], np.float32))
    np.testing.assert_array_equal(points, before)  # not in place
    cloud = np.random.default_rng(0).normal(0.0, 20.0, (1000, 4))
    assert np.array_equal(mirror_points(mirror_points(cloud)), cloud)


def test_mirror_boxes_known_boxes() -> None:
    boxes = np.array(
        [
            [10.0, 2.0, -1.0, 3.9, 1.6, 1.5, 0.5],
            [20.0, -4.0, -1.0, 0.8, 0.6, 1.7, -math.pi],  # -(-pi) = pi wraps to -pi
            [7.0, 0.0, -0.5, 1.7, 0.6, 1.8, 4.0],  # outside [-pi, pi): -4 wraps to 2 pi - 4
        ]
    )
    before = boxes.copy()
    out = mirror_boxes(boxes)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[:, [0, 2, 3, 4, 5]], boxes[:, [0, 2, 3, 4, 5]])
    np.testing.assert_array_equal(out[:, 1], [-2.0, 4.0, -0.0])
    np.testing.assert_allclose(out[:, 6], [-0.5, -math.pi, 2 * math.pi - 4.0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(boxes, before)  # not in place
    # DontCare rows (NaN) stay NaN; dtype float32 is kept.
    nan = mirror_boxes(np.full((1, 7), np.nan, np.float32))
    assert nan.dtype == np.float32 and np.isnan(nan).all()


def test_mirror_boxes_twice_is_the_identity() -> None:
    """Exactly for float32 boxes (the wrap's float64 rounding is far below float32 precision); for float64 the
    heading may move by the rounding of ``(h + pi) - pi``."""
    rng = np.random.default_rng(1)
    boxes = np.concatenate([rng.normal(0.0, 20.0, (1000, 6)), rng.uniform(-3.1, 3.1, (1000, 1))], axis=1)
    float32 = boxes.astype(np.float32)
    assert np.array_equal(mirror_boxes(mirror_boxes(float32)), float32)
    twice = mirror_boxes(mirror_boxes(boxes))
    assert np.array_equal(twice[:, :6], boxes[:, :6])
    np.testing.assert_allclose(twice[:, 6], boxes[:, 6], rtol=0, atol=1e-15)


def test_mirrored_points_stay_in_their_mirrored_boxes() -> None:
    boxes = np.array([[12.0, -3.0, -0.8, 4.0, 1.7, 1.5, 0.4], [20.0, 5.0, -0.9, 0.8, 0.6, 1.7, -2.0]])
    local = np.random.default_rng(2).uniform(-0.45, 0.45, size=(200, 3))
    points = []
    for box in boxes:
        c, s = math.cos(box[6]), math.sin(box[6])
        d = local * box[3:6]
        points.append(
            np.stack(
                [box[0] + c * d[:, 0] - s * d[:, 1], box[1] + s * d[:, 0] + c * d[:, 1], box[2] + d[:, 2]], 1
            )
        )
    inside = points_in_boxes(mirror_points(np.concatenate(points)), mirror_boxes(boxes))
    assert inside[0, :200].all() and inside[1, 200:].all()
    assert not inside[0, 200:].any() and not inside[1, :200].any()


def test_views_by_name() -> None:
    assert KNOWN_VIEWS == (IDENTITY, HFLIP) == ("identity", "hflip")
    points = np.ones((3, 4), np.float32)
    boxes = np.ones((2, 7), np.float32)
    assert points_in_view(points, IDENTITY) is points and boxes_in_view(boxes, IDENTITY) is boxes
    np.testing.assert_array_equal(points_in_view(points, HFLIP), mirror_points(points))
    np.testing.assert_array_equal(boxes_in_view(boxes, HFLIP), mirror_boxes(boxes))
    with pytest.raises(ValueError, match="unknown view 'vflip'"):
        boxes_in_view(boxes, "vflip")
    with pytest.raises(ValueError, match="unknown view 'vflip'"):
        points_in_view(points, "vflip")


def test_view_ground_truth_keeps_every_line_in_order() -> None:
    boxes = np.array(
        [[10.0, 2.0, -1.0, 3.9, 1.6, 1.5, 0.5], [np.nan] * 7, [6.0, -1.0, -0.7, 0.8, 0.6, 1.7, 3.0]]
    )
    labels = _labels(["Car", "DontCare", "Pedestrian"], boxes)
    for view in KNOWN_VIEWS:
        out, names = view_ground_truth(labels, view)
        assert names == ["Car", "DontCare", "Pedestrian"]
        assert out.dtype == np.float32 and out.shape == (3, 7)
        assert np.isnan(out[1]).all()
        np.testing.assert_array_equal(out[[0, 2]], boxes_in_view(labels.boxes[[0, 2]], view))


# ------------------------------------------------------------------------------------------ cache vs student
@pytest.mark.parametrize("view", KNOWN_VIEWS)
def test_cache_ground_truth_equals_the_students_box_for_box(synthetic_train_split, view) -> None:
    """The GT the cache writer measured coverage against is the GT the student trains on, in the same view."""
    split = PreparedSplit(synthetic_train_split)
    student = StudentFrames(split, flip_probability=1.0 if view == HFLIP else 0.0, grid=GRID)
    for i in range(len(split)):
        sample = student[i]
        assert sample.view == view and sample.frame_id == split.frame_ids[i]
        student_gt = ground_truth_from_labels(sample.names, torch.from_numpy(sample.boxes), GRID)
        [(_, cache_boxes, cache_classes)] = frame_inputs(split, i, [view], 4, GRID)
        assert cache_boxes.shape[0] > 0
        assert torch.equal(student_gt.boxes, cache_boxes)
        assert torch.equal(student_gt.classes, cache_classes)
    if view == HFLIP:  # and it is the identity GT mirrored
        boxes, names = view_ground_truth(split.labels(0), IDENTITY)
        identity = ground_truth_from_labels(names, boxes, GRID)
        flipped = student[0].boxes[np.isin(student[0].names, CLASSES)]
        np.testing.assert_array_equal(flipped, mirror_boxes(identity.boxes.numpy()))


def test_cache_covers_every_positive_of_the_students_flipped_ground_truth(teacher_cache_setup) -> None:
    """XGD reads a teacher box for each positive anchor of a flipped sample from the cache's hflip view."""
    split = PreparedSplit(teacher_cache_setup["split"])
    cache = TeacherCache(teacher_cache_setup["params"]["cache"]["store"])
    assigner = TargetAssigner(cache.grid)
    student = StudentFrames(split, flip_probability=1.0, cache=cache, grid=cache.grid)
    for i in range(len(split)):
        sample = student[i]
        gt = ground_truth_from_labels(sample.names, torch.from_numpy(sample.boxes), cache.grid)
        positive = torch.nonzero(assigner.assign(gt.boxes, gt.classes).positive).flatten()
        assert positive.numel() > 0 and sample.teacher is not None and sample.teacher.view == HFLIP
        cache.require_covered(sample.teacher, positive)
