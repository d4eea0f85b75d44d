"""Decoding hand-built head outputs: scores, direction, NMS, top-k; detections -> KITTI result objects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from grids import small_grid
from kitti_calib_000000 import CALIB_000000, LABEL_000000

from stereodistill.data.labels import parse_label_line
from stereodistill.geometry.boxes import boxes_to_image_2d
from stereodistill.geometry.calibration import Calibration
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.box_coder import encode_boxes
from stereodistill.head.decode import (
    DecodeSettings,
    Detections,
    decode_batch,
    decode_frame,
    detections_to_kitti,
)

CAR, PED = 0, 1
LOW = -10.0


@pytest.fixture(scope="module")
def grid() -> AnchorGrid:
    return small_grid(24.0, 4.0, ("Car", "Pedestrian"))


def empty_outputs(grid: AnchorGrid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = grid.num_anchors
    return torch.full((n, grid.num_classes), LOW), torch.zeros(n, 7), torch.zeros(n, 2)


def place(
    grid, cls, box, dirs, k: int, box_value: torch.Tensor, logits: dict[int, float], dir_bin: int
) -> None:
    """Make anchor ``k`` predict ``box_value`` with the given class logits and direction bin."""
    box[k] = encode_boxes(box_value, grid.anchors()[k])
    for c, v in logits.items():
        cls[k, c] = v
    dirs[k] = torch.tensor([3.0, -3.0]) if dir_bin == 0 else torch.tensor([-3.0, 3.0])


def anchor(grid, ix: int, iy: int = 4, c: int = CAR, r: int = 0) -> int:
    return grid.anchor_index(iy, ix, c, r)


GT = torch.tensor([5.3, 0.4, -0.8, 4.2, 1.7, 1.5, 3.0])  # heading 3.0 lies in direction bin 0


def test_single_confident_anchor_decodes_to_its_box(grid):
    cls, box, dirs = empty_outputs(grid)
    place(grid, cls, box, dirs, anchor(grid, 5), GT, {CAR: 4.0}, dir_bin=0)
    dets = decode_frame(cls, box, dirs, grid.anchors())
    assert len(dets) == 1
    torch.testing.assert_close(dets.boxes[0], GT, atol=1e-5, rtol=0)
    assert dets.scores[0].item() == pytest.approx(1 / (1 + math.exp(-4.0)))
    assert dets.labels.tolist() == [CAR] and dets.labels.dtype == torch.long


def test_direction_bin_sets_the_half_turn(grid):
    cls, box, dirs = empty_outputs(grid)
    place(grid, cls, box, dirs, anchor(grid, 5), GT, {CAR: 4.0}, dir_bin=1)
    flipped = decode_frame(cls, box, dirs, grid.anchors())
    assert flipped.boxes[0, 6].item() == pytest.approx(3.0 - math.pi, abs=1e-5)
    torch.testing.assert_close(flipped.boxes[0, :6], GT[:6], atol=1e-5, rtol=0)
    raw = decode_frame(cls, box, None, grid.anchors())  # no classifier: the regressed heading
    assert raw.boxes[0, 6].item() == pytest.approx(3.0, abs=1e-5)


def test_class_agnostic_nms_keeps_the_best_of_overlapping_boxes(grid):
    cls, box, dirs = empty_outputs(grid)
    place(grid, cls, box, dirs, anchor(grid, 5), GT, {CAR: 2.0}, dir_bin=0)
    shifted = GT.clone()
    shifted[0] += 0.8
    place(grid, cls, box, dirs, anchor(grid, 6), shifted, {PED: 3.0}, dir_bin=0)
    far = GT.clone()
    far[0] += 12.0
    place(grid, cls, box, dirs, anchor(grid, 17), far, {CAR: 1.0}, dir_bin=0)
    dets = decode_frame(cls, box, dirs, grid.anchors())
    assert dets.labels.tolist() == [PED, CAR]  # the overlapping Car lost to the better pedestrian
    torch.testing.assert_close(dets.boxes, torch.stack([shifted, far]), atol=1e-5, rtol=0)
    assert dets.scores[0] > dets.scores[1]
    # class-aware: boxes of different classes do not suppress each other
    aware = decode_frame(cls, box, dirs, grid.anchors(), DecodeSettings(class_agnostic=False))
    assert aware.labels.tolist() == [PED, CAR, CAR]


def test_class_aware_keeps_one_detection_per_confident_class(grid):
    cls, box, dirs = empty_outputs(grid)
    place(grid, cls, box, dirs, anchor(grid, 5), GT, {CAR: 4.0, PED: 2.0}, dir_bin=0)
    agnostic = decode_frame(cls, box, dirs, grid.anchors())
    assert agnostic.labels.tolist() == [CAR]
    aware = decode_frame(cls, box, dirs, grid.anchors(), DecodeSettings(class_agnostic=False))
    assert aware.labels.tolist() == [CAR, PED]
    torch.testing.assert_close(aware.boxes[0], aware.boxes[1])


def test_threshold_and_top_k(grid):
    cls, box, dirs = empty_outputs(grid)
    for i, x in enumerate([2.5, 8.5, 14.5, 20.5]):  # far apart, no NMS interaction
        b = GT.clone()
        b[0] = x
        place(grid, cls, box, dirs, anchor(grid, int(x)), b, {CAR: float(i)}, dir_bin=0)
    anchors = grid.anchors()
    everything = decode_frame(cls, box, dirs, anchors, DecodeSettings(score_threshold=0.4))
    assert everything.boxes[:, 0].tolist() == pytest.approx([20.5, 14.5, 8.5, 2.5])
    above = decode_frame(
        cls, box, dirs, anchors, DecodeSettings(score_threshold=0.6)
    )  # sigmoid(0) = 0.5 fails
    assert len(above) == 3
    pre = decode_frame(cls, box, dirs, anchors, DecodeSettings(score_threshold=0.4, pre_nms_top_k=2))
    assert pre.boxes[:, 0].tolist() == pytest.approx([20.5, 14.5])
    post = decode_frame(cls, box, dirs, anchors, DecodeSettings(score_threshold=0.4, post_nms_top_k=1))
    assert post.boxes[:, 0].tolist() == pytest.approx([20.5])
    none = decode_frame(cls, box, dirs, anchors, DecodeSettings(score_threshold=0.99))
    assert none.boxes.shape == (0, 7) and none.scores.shape == (0,) and none.labels.shape == (0,)


def test_decode_batch_and_shape_checks(grid):
    cls, box, dirs = empty_outputs(grid)
    place(grid, cls, box, dirs, anchor(grid, 5), GT, {CAR: 4.0}, dir_bin=0)
    empty_cls = torch.full_like(cls, LOW)
    out = decode_batch(
        torch.stack([cls, empty_cls]), torch.stack([box, box]), torch.stack([dirs, dirs]), grid.anchors()
    )
    assert [len(d) for d in out] == [1, 0]
    with pytest.raises(ValueError, match="per-anchor shapes disagree"):
        decode_frame(cls, box[:-1], dirs, grid.anchors())


def test_detections_to_kitti_round_trips_a_labelled_object():
    calib = Calibration.from_text(CALIB_000000)
    label = parse_label_line(LABEL_000000)
    pedestrian = torch.tensor(label.project_box(), dtype=torch.float32)
    behind = torch.tensor([-10.0, 0.0, -0.8, 4.0, 1.7, 1.5, 0.0])
    beside = torch.tensor([5.0, 30.0, -0.8, 4.0, 1.7, 1.5, 0.0])  # far left of the field of view
    dets = Detections(
        boxes=torch.stack([pedestrian, behind, beside]),
        scores=torch.tensor([0.9, 0.8, 0.7]),
        labels=torch.tensor([1, 0, 0]),
    )
    image_size = (375, 1242)
    objects = detections_to_kitti(dets, calib, ["Car", "Pedestrian"], image_size)
    assert len(objects) == 1
    obj = objects[0]
    assert obj.type == "Pedestrian" and obj.score == pytest.approx(0.9)
    np.testing.assert_allclose(obj.location, label.location, atol=1e-5)
    np.testing.assert_allclose(obj.dimensions, label.dimensions, atol=1e-5)
    assert obj.rotation_y == pytest.approx(label.rotation_y, abs=1e-5)
    assert obj.alpha == pytest.approx(label.alpha, abs=0.01)  # the label's alpha is rounded to 2 decimals
    expected_bbox, _ = boxes_to_image_2d(pedestrian[None].double().numpy(), calib, image_size)
    np.testing.assert_allclose(obj.bbox, expected_bbox[0], atol=1e-6)
    assert (obj.truncated, obj.occluded) == (-1.0, -1)
    line = parse_label_line(obj.to_line())
    assert line.type == "Pedestrian" and line.score == pytest.approx(0.9)
    assert (
        detections_to_kitti(
            Detections(torch.zeros(0, 7), torch.zeros(0), torch.zeros(0, dtype=torch.long)),
            calib,
            ["Car"],
            image_size,
        )
        == []
    )
