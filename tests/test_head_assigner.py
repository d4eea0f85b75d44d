"""Target assignment on hand-built scenes, against a slow reference, and the label -> assigner mapping.

Grid: x in [0, 20), y in [-5, 5), 1 m cells (cell centres at x = ix + 0.5, y = iy - 4.5), classes Car and
Pedestrian, rotations 0 and pi/2. Hand IoUs used below (Car anchor 3.9 x 1.6 against a Car-sized box
shifted along x by s: IoU = (3.9 - s) * 1.6 / (2 * 6.24 - (3.9 - s) * 1.6)):
s = 0: 1.0, s = 0.2: 0.902, s = 0.8: 0.660, s = 1: 0.592, s = 1.2: 0.529, s = 1.8: 0.368, s = 2: 0.322.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from grids import small_grid

from stereodistill.errors import InputError
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import (
    IGNORE,
    FrameGroundTruth,
    TargetAssigner,
    ground_truth_from_labels,
    nearest_axis_bev_iou,
)
from stereodistill.head.box_coder import decode_boxes, direction_target
from stereodistill.params import load_params

CAR, PED, BG = 0, 1, 2
Y = 0.5  # centre of row iy = 5


@pytest.fixture(scope="module")
def grid() -> AnchorGrid:
    return small_grid(20.0, 5.0, ("Car", "Pedestrian"))


@pytest.fixture(scope="module")
def assigner(grid) -> TargetAssigner:
    return TargetAssigner(grid)


def car(x: float, y: float = Y, l: float = 3.9, w: float = 1.6, heading: float = 0.0) -> list[float]:
    return [x, y, -0.87, l, w, 1.56, heading]


def idx(grid: AnchorGrid, x: float, y: float = Y, c: int = CAR, r: int = 0) -> int:
    return grid.anchor_index(int(y + 5), int(x), c, r)


def assign(assigner, boxes, classes, **kwargs):
    return assigner.assign(
        torch.tensor(boxes).reshape(-1, 7), torch.tensor(classes, dtype=torch.long), **kwargs
    )


def test_gt_exactly_on_an_anchor(grid, assigner):
    anchors = grid.anchors()
    k = idx(grid, 5.5)
    t = assign(assigner, [anchors[k].tolist()], [CAR])
    assert t.labels[k] == CAR and t.matched_gt[k] == 0
    torch.testing.assert_close(t.box_targets[k], torch.zeros(7))
    assert t.dir_targets[k] == direction_target(torch.tensor(0.0)) == 1
    assert t.positive.sum() == 1
    # neighbours along x (IoU 0.592) fall in the ignored band; nothing else does
    assert set(torch.nonzero(t.ignored).flatten().tolist()) == {idx(grid, 4.5), idx(grid, 6.5)}
    assert t.labels[idx(grid, 5.5, r=1)] == BG  # the rotated anchor: IoU 2.56 / 9.92 = 0.258
    assert t.labels[idx(grid, 7.5)] == BG  # IoU 0.322
    assert t.labels[idx(grid, 5.5, y=Y + 1)] == BG  # IoU 0.231
    assert t.labels[idx(grid, 5.5, c=PED)] == BG  # no pedestrian GT
    assert (t.matched_gt[~t.positive] == -1).all() and (t.dir_targets[~t.positive] == -1).all()
    assert (t.box_targets[~t.positive] == 0).all()


def test_box_targets_decode_to_the_matched_gt(grid, assigner):
    boxes = torch.tensor([car(5.7, 0.3, heading=0.2), car(12.2, -2.1, l=4.2, heading=-2.9)])
    t = assigner.assign(boxes, torch.tensor([CAR, CAR]))
    pos = torch.nonzero(t.positive).flatten()
    assert pos.numel() >= 2
    decoded = decode_boxes(t.box_targets[pos], grid.anchors()[pos])
    torch.testing.assert_close(decoded, boxes[t.matched_gt[pos]], atol=1e-5, rtol=0)
    torch.testing.assert_close(t.dir_targets[pos], direction_target(boxes[t.matched_gt[pos], 6]))


def test_force_match_of_a_gt_below_the_matched_threshold(grid, assigner):
    # a 2 x 1 box in a Car anchor's cell: best IoU 2 / 6.24 = 0.32 < unmatched 0.45, still positive
    t = assign(assigner, [car(5.5, l=2.0, w=1.0)], [CAR])
    assert torch.nonzero(t.positive).flatten().tolist() == [idx(grid, 5.5)]
    assert t.matched_gt[idx(grid, 5.5)] == 0
    assert t.labels[idx(grid, 4.5)] == BG  # IoU 0.31


def test_force_match_takes_all_tied_best_anchors(grid, assigner):
    # on the boundary between two cells: both anchors contain the box, IoU 0.32 each
    t = assign(assigner, [car(6.0, l=2.0, w=1.0)], [CAR])
    assert sorted(torch.nonzero(t.positive).flatten().tolist()) == [idx(grid, 5.5), idx(grid, 6.5)]


def test_gt_outside_the_grid_has_no_anchor(assigner):
    for x in (
        100.0,
        -4.0,
    ):  # at -4 the box ends 0.6 m before the first anchor begins: best IoU 0, no force match
        t = assign(assigner, [car(x)], [CAR])
        assert t.positive.sum() == 0 and (t.labels == BG).all()


def test_gt_hanging_over_the_grid_edge_gets_its_edge_anchor(grid, assigner):
    # rect x in [-2.95, 0.95]; the anchor at x = 0.5 overlaps 2.4 x 1.6: IoU 3.84 / 8.64 = 0.444 (force match)
    t = assign(assigner, [car(-1.0)], [CAR])
    assert torch.nonzero(t.positive).flatten().tolist() == [idx(grid, 0.5)]
    t = assign(assigner, [car(20.0, y=4.9, heading=math.pi / 2)], [CAR])  # corner cell, rotated box
    assert torch.nonzero(t.positive).flatten().tolist() == [idx(grid, 19.5, y=4.5, r=1)]


def test_no_gt_means_all_background(grid, assigner):
    t = assigner.assign(torch.zeros(0, 7), torch.zeros(0, dtype=torch.long))
    assert t.labels.shape == (grid.num_anchors,) and (t.labels == BG).all()


def test_two_gts_competing_for_anchors(grid, assigner):
    t = assign(assigner, [car(5.5), car(7.3)], [CAR, CAR])
    assert t.matched_gt[idx(grid, 5.5)] == 0  # 1.0 vs 0.368
    assert t.matched_gt[idx(grid, 6.5)] == 1  # 0.592 vs 0.660
    assert t.matched_gt[idx(grid, 7.5)] == 1  # 0.902
    assert t.labels[idx(grid, 4.5)] == IGNORE  # 0.592
    assert t.labels[idx(grid, 8.5)] == IGNORE  # 0.529
    assert t.positive.sum() == 3


def test_force_matched_anchor_regresses_to_the_gt_it_overlaps_most(grid, assigner):
    # GT 0 (2 x 1) has its best anchor at 5.5 (0.32), but that anchor overlaps GT 1 more (0.660), as OpenPCDet
    t = assign(assigner, [car(5.5, l=2.0, w=1.0), car(6.3)], [CAR, CAR])
    assert t.matched_gt[idx(grid, 5.5)] == 1
    assert (t.matched_gt == 0).sum() == 0


def test_classes_are_assigned_separately(grid, assigner):
    anchors = grid.anchors()
    ped = anchors[idx(grid, 10.5, c=PED)].tolist()
    t = assign(assigner, [car(5.5), ped], [CAR, PED])
    assert t.labels[idx(grid, 10.5, c=PED)] == PED and t.matched_gt[idx(grid, 10.5, c=PED)] == 1
    assert t.labels[idx(grid, 10.5, c=CAR)] == BG  # a Car anchor never matches a pedestrian
    assert t.labels[idx(grid, 5.5, c=PED)] == BG


def test_van_makes_overlapping_car_anchors_ignored_not_negative(grid, assigner):
    empty = (torch.zeros(0, 7), torch.zeros(0, dtype=torch.long))
    van = torch.tensor([car(5.5)])
    plain = assigner.assign(*empty)
    t = assigner.assign(*empty, ignore_boxes=van, ignore_classes=torch.tensor([CAR]))
    for x in (4.5, 5.5, 6.5):  # IoU 0.592, 1.0, 0.592 >= Car's unmatched 0.45
        assert plain.labels[idx(grid, x)] == BG
        assert t.labels[idx(grid, x)] == IGNORE
    assert t.labels[idx(grid, 7.5)] == BG  # IoU 0.322
    assert t.labels[idx(grid, 5.5, c=PED)] == BG  # a Van says nothing about pedestrians
    assert t.ignored.sum() == 3 and t.positive.sum() == 0


def test_ignore_box_never_demotes_a_positive(grid, assigner):
    t = assign(
        assigner, [car(5.5)], [CAR], ignore_boxes=torch.tensor([car(5.5)]), ignore_classes=torch.tensor([CAR])
    )
    assert t.labels[idx(grid, 5.5)] == CAR


def test_dontcare_box_ignores_anchor_centres_inside_it(grid, assigner):
    dontcare = torch.tensor([[10.5, 0.5, -1.0, 3.0, 3.0, 2.0, 0.0]])
    t = assign(assigner, [car(10.5)], [CAR], dontcare_boxes=dontcare)
    anchors = grid.anchors()
    inside = ((anchors[:, 0] - 10.5).abs() <= 1.5) & ((anchors[:, 1] - 0.5).abs() <= 1.5)
    assert inside.sum() == 9 * 4
    assert t.labels[idx(grid, 10.5)] == CAR  # positives stay positive
    assert (t.labels[inside & ~t.positive] == IGNORE).all()
    # outside the region nothing changes (the GT's ignored-band neighbours x = 9.5, 11.5 lie inside it)
    plain = assign(assigner, [car(10.5)], [CAR])
    assert torch.equal(t.labels[~inside], plain.labels[~inside])
    assert not (t.ignored & ~inside).any()


def test_assign_batch_stacks_frames(grid, assigner):
    frames = [
        FrameGroundTruth.from_boxes(torch.tensor([car(5.5)]), torch.tensor([CAR])),
        FrameGroundTruth.from_boxes(torch.zeros(0, 7), torch.zeros(0, dtype=torch.long)),
    ]
    t = assigner.assign_batch(frames)
    n = grid.num_anchors
    assert t.labels.shape == (2, n) and t.box_targets.shape == (2, n, 7) and t.dir_targets.shape == (2, n)
    assert t.positive[0].sum() == 1 and t.positive[1].sum() == 0
    single = assigner.assign_frame(frames[0])
    assert torch.equal(t.labels[0], single.labels) and torch.equal(t.box_targets[0], single.box_targets)


def test_bad_class_ids_are_rejected(assigner):
    with pytest.raises(ValueError, match=r"GT class ids must lie in 0..1"):
        assign(assigner, [car(5.5)], [2])
    with pytest.raises(ValueError, match="ignore class ids"):
        assign(assigner, [], [], ignore_boxes=torch.tensor([car(5.5)]), ignore_classes=torch.tensor([-1]))
    with pytest.raises(ValueError, match="GT boxes contain NaN"):
        assign(assigner, [car(float("nan"))], [0])
    with pytest.raises(ValueError, match="1 GT boxes but 2 class ids"):
        assign(assigner, [car(5.5)], [0, 0])


def test_nearest_axis_bev_iou_snaps_headings():
    a = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, math.pi / 2]])
    b = torch.tensor(
        [
            [0.0, 0.0, 0.0, 2.0, 4.0, 1.0, 0.0],  # same footprint: IoU 1
            [0.0, 0.0, 0.0, 4.0, 2.0, 1.0, 0.7],  # 0.7 < pi/4 snaps to 0: cross, IoU 4 / 12
            [0.0, 0.0, 0.0, 4.0, 2.0, 1.0, 0.9],  # snaps to pi/2: IoU 1
            [0.0, 0.0, 0.0, 4.0, 2.0, 1.0, -math.pi + 0.1],  # snaps to pi: cross
            [0.0, 0.0, 0.0, 4.0, 2.0, 1.0, -math.pi / 2 - 0.3],  # snaps to -pi/2: IoU 1
            [5.0, 0.0, 0.0, 4.0, 2.0, 1.0, math.pi / 2],  # far away: 0
            [0.5, 1.0, 5.0, 4.0, 2.0, 1.0, math.pi / 2],  # shifted, z ignored: (1.5 * 3) / (16 - 4.5)
        ]
    )
    torch.testing.assert_close(
        nearest_axis_bev_iou(a, b)[0], torch.tensor([1.0, 1 / 3, 1.0, 1 / 3, 1.0, 0.0, 4.5 / 11.5])
    )


def _reference_assign(grid: AnchorGrid, gt, gt_cls, ign, ign_cls):
    """Slow, loop-based restatement of the rules, for random-scene comparison."""

    def rect(b):
        h = abs((b[6] + math.pi / 2) % math.pi - math.pi / 2)
        lx, ly = (b[4], b[3]) if h > math.pi / 4 else (b[3], b[4])
        return b[0] - lx / 2, b[1] - ly / 2, b[0] + lx / 2, b[1] + ly / 2

    def iou(p, q):
        iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        inter = iw * ih
        return inter / ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter)

    anchors = grid.anchors(dtype=torch.float64).tolist()
    anchor_cls = grid.anchor_class_ids().tolist()
    n, c_bg = len(anchors), grid.num_classes
    labels, matched = [c_bg] * n, [-1] * n
    ious = [
        [iou(rect(a), rect(g)) if anchor_cls[i] == gc else -1.0 for g, gc in zip(gt, gt_cls, strict=True)]
        for i, a in enumerate(anchors)
    ]
    best_per_gt = [max((ious[i][j] for i in range(n)), default=0.0) for j in range(len(gt))]
    for i in range(n):
        spec = grid.classes[anchor_cls[i]]
        row = ious[i]
        best = max(row, default=-1.0)
        forced = any(row[j] >= best_per_gt[j] - 1e-6 and best_per_gt[j] > 0 for j in range(len(gt)))
        if best >= spec.matched_iou or forced:
            labels[i], matched[i] = anchor_cls[i], row.index(best)
        elif best >= spec.unmatched_iou:
            labels[i] = IGNORE
        elif any(
            k == anchor_cls[i] and iou(rect(anchors[i]), rect(b)) >= spec.unmatched_iou
            for b, k in zip(ign, ign_cls, strict=True)
        ):
            labels[i] = IGNORE
    return labels, matched


def low_threshold_grid() -> AnchorGrid:
    """Half-metre cells and tiny unmatched thresholds: every anchor that touches a box becomes non-negative."""
    return AnchorGrid.from_params(
        {
            "point_cloud_range": [0.0, -5.0, -3.0, 20.0, 5.0, 1.0],
            "bev_cell_size": 0.5,
            "rotations": [0.0, math.pi / 2],
            "classes": [
                {
                    "name": "Car",
                    "size": [3.9, 1.6, 1.56],
                    "bottom_z": -1.65,
                    "matched_iou": 0.3,
                    "unmatched_iou": 0.001,
                },
                {
                    "name": "Pedestrian",
                    "size": [0.8, 0.6, 1.73],
                    "bottom_z": -1.65,
                    "matched_iou": 0.2,
                    "unmatched_iou": 0.001,
                },
            ],
        }
    )


@pytest.mark.parametrize("low_thresholds", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_slow_reference_on_random_scenes(grid, assigner, seed, low_thresholds):
    if low_thresholds:
        grid = low_threshold_grid()
        assigner = TargetAssigner(grid)
    rng = np.random.default_rng(seed)
    g = 6
    cls = rng.integers(0, 2, g)
    size = np.where(cls[:, None] == CAR, [3.9, 1.6, 1.56], [0.8, 0.6, 1.73]) * rng.uniform(0.7, 1.3, (g, 3))
    # centres up to 2 m outside the range, so boxes hang over its edges
    boxes = np.concatenate(
        [rng.uniform([-2, -7, -1], [22, 7, 0], (g, 3)), size, rng.uniform(-math.pi, math.pi, (g, 1))], axis=1
    )
    ign = np.concatenate(
        [
            rng.uniform([0, -5, -1], [20, 5, 0], (2, 3)),
            [[4.5, 1.8, 1.9], [1.0, 0.6, 1.2]],
            rng.uniform(-3, 3, (2, 1)),
        ],
        axis=1,
    )
    ign_cls = [CAR, PED]
    t = assigner.assign(
        torch.tensor(boxes, dtype=torch.float32),
        torch.tensor(cls),
        ignore_boxes=torch.tensor(ign, dtype=torch.float32),
        ignore_classes=torch.tensor(ign_cls),
    )
    # the reference runs in float64 on the float32-rounded inputs
    boxes32 = torch.tensor(boxes, dtype=torch.float32).double().tolist()
    ign32 = torch.tensor(ign, dtype=torch.float32).double().tolist()
    labels, matched = _reference_assign(grid, boxes32, cls.tolist(), ign32, ign_cls)
    assert t.labels.tolist() == labels
    assert t.matched_gt.tolist() == matched
    assert t.positive.sum() >= 1 and t.ignored.sum() >= 1


def test_ground_truth_from_labels_maps_kitti_types():
    names = ["Car", "Van", "Pedestrian", "Person_sitting", "Truck", "DontCare", "DontCare", "Cyclist", "Misc"]
    boxes = np.arange(len(names) * 7, dtype=np.float64).reshape(-1, 7) + 1.0
    boxes[5, 3:6] = -1.0  # KITTI DontCare: no 3D box
    gt = ground_truth_from_labels(names, boxes, small_grid(8.0, 4.0))
    torch.testing.assert_close(gt.boxes, torch.tensor(boxes[[0, 2, 7]], dtype=torch.float32))
    assert gt.classes.tolist() == [0, 1, 2]
    torch.testing.assert_close(gt.ignore_boxes, torch.tensor(boxes[[1, 3]], dtype=torch.float32))
    assert gt.ignore_classes.tolist() == [0, 1]
    torch.testing.assert_close(gt.dontcare_boxes, torch.tensor(boxes[[6]], dtype=torch.float32))
    # related classes absent from the grid are dropped; a Van is only an ignore box for Car
    only_ped = ground_truth_from_labels(names, boxes, small_grid(8.0, 4.0, ("Pedestrian",)))
    assert only_ped.classes.tolist() == [0] and only_ped.ignore_classes.tolist() == [0]
    torch.testing.assert_close(only_ped.ignore_boxes, torch.tensor(boxes[[3]], dtype=torch.float32))
    with pytest.raises(ValueError, match="2 names but 9 boxes"):
        ground_truth_from_labels(["Car", "Van"], boxes, small_grid(8.0, 4.0, ("Car",)))


def _merging(grid: AnchorGrid) -> AnchorGrid:
    return AnchorGrid.from_params({**grid.to_dict(), "related_classes": "merge"})


def test_merged_related_classes_are_ground_truth_of_their_class_in_label_order():
    """grid.related_classes: merge (LIGA-Stereo): Van is a Car, Person_sitting a Pedestrian; nothing is ignored."""
    names = ["Van", "Car", "Truck", "Person_sitting", "DontCare", "Cyclist"]
    boxes = np.arange(len(names) * 7, dtype=np.float64).reshape(-1, 7) + 1.0
    gt = ground_truth_from_labels(names, boxes, _merging(small_grid(8.0, 4.0)))
    torch.testing.assert_close(gt.boxes, torch.tensor(boxes[[0, 1, 3, 5]], dtype=torch.float32))
    assert gt.classes.tolist() == [0, 0, 1, 2]
    assert gt.ignore_boxes.shape == (0, 7) and gt.ignore_classes.shape == (0,)
    torch.testing.assert_close(gt.dontcare_boxes, torch.tensor(boxes[[4]], dtype=torch.float32))
    # still dropped when the related class is not in the grid
    cyclists = ground_truth_from_labels(names, boxes, _merging(small_grid(8.0, 4.0, ("Cyclist",))))
    assert cyclists.classes.tolist() == [0] and cyclists.ignore_boxes.shape == (0, 7)


def test_related_classes_is_part_of_the_grid_contract():
    grid = small_grid(8.0, 4.0)
    merged = _merging(grid)
    assert "related_classes" not in grid.to_dict()  # default grids serialise as before the key existed
    assert merged.to_dict()["related_classes"] == "merge"
    assert AnchorGrid.from_dict(merged.to_dict()) == merged
    assert grid.diff(merged) == "grid.related_classes: 'ignore' != 'merge'"
    with pytest.raises(
        InputError, match=r"grid\.related_classes: expected one of ignore, merge, got 'Merge'"
    ):
        AnchorGrid.from_params({**grid.to_dict(), "related_classes": "Merge"})


def test_merged_van_is_a_positive_car(grid, assigner):
    gt = ground_truth_from_labels(["Car", "Van"], np.array([car(5.5), car(12.5)]), _merging(grid))
    t = assigner.assign_frame(gt)
    assert t.labels[idx(grid, 5.5)] == CAR
    assert t.labels[idx(grid, 12.5)] == CAR
    assert int(t.matched_gt[idx(grid, 12.5)]) == 1


def test_ground_truth_from_labels_feeds_the_assigner(grid, assigner):
    gt = ground_truth_from_labels(["Car", "Van"], np.array([car(5.5), car(12.5)]), grid)
    t = assigner.assign_frame(gt)
    assert t.labels[idx(grid, 5.5)] == CAR
    assert t.labels[idx(grid, 12.5)] == IGNORE


def test_the_kitti_preset_merges_related_classes_and_params_yaml_ignores_them():
    repo = Path(__file__).resolve().parents[1]
    grids = {
        name: AnchorGrid.from_params(load_params(path).grid)
        for name, path in (
            ("default", repo / "params.yaml"),
            ("kitti", repo / "docs/presets/params.kitti.yaml"),
        )
    }
    assert grids["default"].related_classes == "ignore"
    assert grids["kitti"].related_classes == "merge"
