"""Cases from the cross-check of the evaluator against the python port of the KITTI devkit (see
docs/EVALUATOR_VALIDATION.md), each small enough to verify by hand; expected values are derived in the comments.

With a single valid ground truth (n_gt = 1 <= 40) a true positive gives one threshold, so precision 1 lands in
slot 0 only: R11 = 100/11, R40 = 0 (the devkit's few-ground-truth cap).
"""

from __future__ import annotations

import math

import pytest

from stereodistill.data.labels import KittiObject
from stereodistill.evaluation import evaluate_kitti

CAR_HWL = (1.5, 2.0, 4.0)  # h, w, l: BEV footprint 4 x 2 m, volume 12 m^3
R11_ONE = 100 / 11


def car(
    bbox: tuple[float, float, float, float],
    location: tuple[float, float, float] = (0.0, 1.6, 20.0),
    rotation_y: float = 0.0,
    kind: str = "Car",
    score: float | None = None,
) -> KittiObject:
    return KittiObject(kind, 0.0, 0, 0.0, bbox, CAR_HWL, location, rotation_y, score)


def strict_and_loose_r11(result: dict, metric: str) -> tuple[float, float]:
    rows = result["results"]["Car"]
    return rows["strict"]["R11"][metric]["easy"], rows["loose"]["R11"][metric]["easy"]


def test_threshold_with_no_true_or_false_positive_gives_precision_zero_not_nan():
    # Image boxes (all y 100..200, 100 px wide), in file order: Van B [300, 400], Car A [315, 415],
    # Van C [285, 385]; detections D1 [290, 390] (.9) and D2 [305, 405] (.8), 3D boxes far from everything.
    # 2D IoUs: D1-B 90/110, D1-A 75/125 (< .7), D1-C 95/105; D2-B 95/105, D2-A 90/110, D2-C 80/120 (< .7).
    # TP scores (highest score first): B takes D1, A takes D2 -> TP at .8; C gets nothing. One threshold, .8.
    # At .8 (largest overlap first): B takes D2, A has no candidate left (FN), C takes D1: TP = FP = 0.
    # The devkit and the python port divide 0 by 0 (R11 = NaN); this evaluator uses precision 0.
    van_b, car_a, van_c = (
        car((300, 100, 400, 200), kind="Van", location=(0.0, 1.6, 10.0)),
        car((315, 100, 415, 200), location=(5.0, 1.6, 20.0)),
        car((285, 100, 385, 200), kind="Van", location=(-5.0, 1.6, 30.0)),
    )
    d1 = car((290, 100, 390, 200), location=(10.0, 1.6, 40.0), score=0.9)
    d2 = car((305, 100, 405, 200), location=(-10.0, 1.6, 50.0), score=0.8)
    result = evaluate_kitti({"000000": [van_b, car_a, van_c]}, {"000000": [d1, d2]}, classes=("Car",))
    assert result["num_gt"]["Car"]["easy"] == 1
    for row in ("strict", "loose"):
        for average in ("R11", "R40"):
            for metric in ("bbox", "aos", "bev", "3d"):
                assert result["results"]["Car"][row][average][metric]["easy"] == 0.0

    # Without Van B, A takes D2 and C takes D1 in both passes: TP 1, FP 0 at .8 -> R11 = 100/11.
    result = evaluate_kitti({"000000": [car_a, van_c]}, {"000000": [d1, d2]}, classes=("Car",))
    assert strict_and_loose_r11(result, "bbox") == pytest.approx((R11_ONE, R11_ONE))


@pytest.mark.parametrize(
    ("rotation_y", "shift", "expected_iou"),
    [
        # rotation_y = 0: the length (4 m) runs along camera x, the width (2 m) along z.
        (0.0, (0.5, 0.0, 0.0), 7 / 9),  # 3.5 x 2 overlap, union 16 - 7
        (0.0, (1.0, 0.0, 0.0), 6 / 10),
        (0.0, (0.0, 0.0, 1.0), 4 / 12),  # 4 x 1 overlap
        # rotation_y = pi/2: the length runs along camera z.
        (math.pi / 2, (0.0, 0.0, 1.0), 6 / 10),
        (math.pi / 2, (1.0, 0.0, 0.0), 4 / 12),
        # Same footprint, raised by half its height: BEV IoU 1, 3D IoU (8 * .75) / (24 - 6).
        (0.0, (0.0, -0.75, 0.0), None),
    ],
)
def test_rotated_bev_and_3d_overlaps_against_thresholds(rotation_y, shift, expected_iou):
    # One easy car and one detection with the same image box; the BEV/3D IoU decides TP (R11 = 100/11) or not
    # (0) at the strict (.7) and loose (.5) Car thresholds.
    gt = car((100, 100, 200, 200), rotation_y=rotation_y)
    location = tuple(g + s for g, s in zip(gt.location, shift, strict=True))
    det = car((100, 100, 200, 200), location=location, rotation_y=rotation_y, score=0.9)
    result = evaluate_kitti({"000000": [gt]}, {"000000": [det]}, classes=("Car",))
    assert strict_and_loose_r11(result, "bbox") == pytest.approx((R11_ONE, R11_ONE))
    bev_iou = 1.0 if expected_iou is None else expected_iou
    iou_3d = 1 / 3 if expected_iou is None else expected_iou
    for metric, iou in (("bev", bev_iou), ("3d", iou_3d)):
        expected = (R11_ONE if iou > 0.7 else 0.0, R11_ONE if iou > 0.5 else 0.0)
        assert strict_and_loose_r11(result, metric) == pytest.approx(expected), metric
