"""KITTI evaluation protocol: hand-computed AP cases, a literal devkit transcription on random scenes, the CLI.

AP arithmetic used below (see ``evaluation/average_precision.py``): with ``n_gt <= 40`` every true positive
score becomes a threshold, the precision at the k-th threshold goes to slot k of a 41-slot curve (max over
later slots), R11 = mean of slots 0, 4, ..., 40 and R40 = mean of slots 1 ... 40, in percent. So two
thresholds with interpolated precisions ``p0, p1`` give R11 = p0 / 11 * 100 and R40 = p1 / 40 * 100.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import pytest
from click.testing import CliRunner
from shapely.geometry import Polygon

from stereodistill.cli.evaluate import evaluate
from stereodistill.data.labels import KittiObject, write_label_file
from stereodistill.errors import InputError
from stereodistill.evaluation import evaluate_folders, evaluate_kitti, format_table
from stereodistill.evaluation.average_precision import score_thresholds
from stereodistill.evaluation.protocol import DIFFICULTIES, MIN_OVERLAPS

CAR_HWL = (1.5, 1.6, 3.9)
PED_HWL = (1.75, 0.6, 0.8)
R11_ONE = 100 / 11  # one slot of precision 1 in the 11-point average
R40_ONE = 100 / 40  # one slot of precision 1 in the 40-point average


def obj(
    kind: str = "Car",
    bbox: tuple[float, float, float, float] = (100.0, 100.0, 200.0, 150.0),
    location: tuple[float, float, float] = (0.0, 1.6, 10.0),
    dimensions: tuple[float, float, float] = CAR_HWL,
    rotation_y: float = 0.0,
    alpha: float = 0.0,
    truncated: float = 0.0,
    occluded: int = 0,
    score: float | None = None,
) -> KittiObject:
    return KittiObject(kind, truncated, occluded, alpha, bbox, dimensions, location, rotation_y, score)


def dontcare(bbox: tuple[float, float, float, float]) -> KittiObject:
    return KittiObject("DontCare", -1, -1, -10, bbox, (-1, -1, -1), (-1000, -1000, -1000), -10)


def detected(gt: KittiObject, score: float, **changes) -> KittiObject:
    """A detection equal to ``gt`` (same 2D and 3D box) with a score, optionally changed."""
    fields = dict(
        kind=gt.type,
        bbox=gt.bbox,
        location=gt.location,
        dimensions=gt.dimensions,
        rotation_y=gt.rotation_y,
        alpha=gt.alpha,
        score=score,
    )
    fields.update(changes)
    return obj(**fields)


def ap(
    result: dict, cls: str, metric: str, average: str, difficulty: str = "easy", row: str = "strict"
) -> float:
    return result["results"][cls][row][average][metric][difficulty]


def frames(*per_frame: tuple[list[KittiObject], list[KittiObject]]) -> tuple[dict, dict]:
    gt = {f"{i:06d}": g for i, (g, _) in enumerate(per_frame)}
    dt = {f"{i:06d}": d for i, (_, d) in enumerate(per_frame)}
    return gt, dt


def one_car_frames(scores: list[float | None]) -> list[tuple[list[KittiObject], list[KittiObject]]]:
    """One easy car per frame, detected exactly with the given score (None: missed)."""
    out = []
    for score in scores:
        car = obj()
        out.append(([car], [] if score is None else [detected(car, score)]))
    return out


# ---------------------------------------------------------------- hand-computed cases


def test_perfect_detection_of_41_cars_is_100_everywhere():
    gt, dt = frames(*one_car_frames([0.9] * 41))
    result = evaluate_kitti(gt, dt)
    for row in ("strict", "loose"):
        for average in ("R11", "R40"):
            for metric in ("bbox", "bev", "3d", "aos"):
                for difficulty in DIFFICULTIES:
                    assert ap(result, "Car", metric, average, difficulty, row) == pytest.approx(
                        100.0, abs=1e-9
                    )
                    assert ap(result, "Pedestrian", metric, average, difficulty, row) == 0.0
    assert result["num_gt"]["Car"] == {"easy": 41, "moderate": 41, "hard": 41}
    assert result["num_gt"]["Cyclist"] == {"easy": 0, "moderate": 0, "hard": 0}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_few_ground_truth_caps_ap(n):
    # n <= 40 objects, all found: n thresholds, slots 0..n-1 = 1. R11 only sees slot 0; R40 sees slots 1..n-1.
    gt, dt = frames(*one_car_frames([0.9 - 0.1 * i for i in range(n)]))
    result = evaluate_kitti(gt, dt, classes=("Car",))
    for metric in ("bbox", "bev", "3d", "aos"):
        assert ap(result, "Car", metric, "R11") == pytest.approx(R11_ONE)
        assert ap(result, "Car", metric, "R40") == pytest.approx((n - 1) * R40_ONE, abs=1e-12)


def test_ranking_with_false_positive_between_true_positives():
    # 3 cars; scores .9 TP, .8 FP, .7 TP, .6 TP -> thresholds .9, .7, .6 with precision 1, 2/3, 3/4
    # -> interpolated 1, 3/4, 3/4 -> R11 = 1/11, R40 = (3/4 + 3/4) / 40.
    per_frame = one_car_frames([0.9, 0.7, 0.6])
    per_frame[0][1].append(obj(bbox=(600, 100, 700, 150), location=(5.0, 1.6, 30.0), score=0.8))
    result = evaluate_kitti(*frames(*per_frame), classes=("Car",))
    for metric in ("bbox", "bev", "3d"):
        assert ap(result, "Car", metric, "R11") == pytest.approx(R11_ONE)
        assert ap(result, "Car", metric, "R40") == pytest.approx(1.5 * R40_ONE)


def test_false_positive_ranked_first():
    # FP at .95 above three TPs: precision 1/2, 2/3, 3/4 -> interpolated 3/4, 3/4, 3/4.
    per_frame = one_car_frames([0.9, 0.7, 0.6])
    per_frame[1][1].append(obj(bbox=(600, 100, 700, 150), location=(5.0, 1.6, 30.0), score=0.95))
    result = evaluate_kitti(*frames(*per_frame), classes=("Car",))
    assert ap(result, "Car", "bbox", "R11") == pytest.approx(0.75 * R11_ONE)
    assert ap(result, "Car", "bbox", "R40") == pytest.approx(1.5 * R40_ONE)


def test_missed_object():
    # Below 41 objects a miss only shows in num_gt: 3 cars, 2 found -> thresholds .9, .8, precision 1, 1.
    result = evaluate_kitti(*frames(*one_car_frames([0.9, 0.8, None])), classes=("Car",))
    assert result["num_gt"]["Car"]["easy"] == 3
    assert ap(result, "Car", "3d", "R40") == pytest.approx(R40_ONE)
    # 48 cars: all found -> 41 thresholds (100); 47 found -> the last recall 47/48 is nearer to 39/40 than
    # to 40/40, so only 40 thresholds: slots 0..39 = 1, slot 40 = 0 (decisions checked with exact fractions).
    scores = [1.0 - 0.01 * i for i in range(48)]
    assert ap(evaluate_kitti(*frames(*one_car_frames(scores))), "Car", "3d", "R40") == pytest.approx(100.0)
    missed = evaluate_kitti(*frames(*one_car_frames(scores[:47] + [None])), classes=("Car",))
    assert ap(missed, "Car", "3d", "R40") == pytest.approx(39 * R40_ONE)
    assert ap(missed, "Car", "3d", "R11") == pytest.approx(10 * R11_ONE)


@pytest.mark.parametrize(
    ("fp_box", "absorbed"), [((520, 110, 620, 170), True), ((440, 110, 540, 170), False)]
)
def test_false_positive_inside_dontcare(fp_box, absorbed):
    # DontCare (500..700): the first FP box lies inside (covered 100%), the second only 40% (< 0.7).
    car_a, car_b = obj(), obj(location=(2.0, 1.6, 15.0))
    fp = obj(bbox=fp_box, location=(10.0, 1.6, 40.0), score=0.95)
    gt, dt = frames(
        ([car_a, dontcare((500, 100, 700, 200))], [detected(car_a, 0.9), fp]),
        ([car_b], [detected(car_b, 0.8)]),
    )
    result = evaluate_kitti(gt, dt, classes=("Car",))
    # With the FP counted: precision 1/2, 2/3 -> interpolated 2/3, 2/3; without: 1, 1.
    counted, ignored = (2 / 3 * R11_ONE, 2 / 3 * R40_ONE), (R11_ONE, R40_ONE)
    expected_2d = ignored if absorbed else counted
    for metric in ("bbox", "aos"):
        assert ap(result, "Car", metric, "R11") == pytest.approx(expected_2d[0])
        assert ap(result, "Car", metric, "R40") == pytest.approx(expected_2d[1])
    # DontCare regions are 2D only: BEV and 3D still count the FP.
    for metric in ("bev", "3d"):
        assert ap(result, "Car", metric, "R11") == pytest.approx(counted[0])
        assert ap(result, "Car", metric, "R40") == pytest.approx(counted[1])


def test_hard_only_object_counts_only_in_hard():
    cars = [obj(bbox=(120 * i, 100, 100 + 120 * i, 150), location=(5.0 * i, 1.6, 10.0)) for i in range(3)]
    hard_only = [
        obj(bbox=(500, 100, 600, 150), location=(0.0, 1.6, 30.0), occluded=2),
        obj(bbox=(700, 100, 800, 150), location=(5.0, 1.6, 30.0), truncated=0.4),
    ]
    dets = [detected(c, s) for c, s in zip(cars + hard_only, [0.9, 0.8, 0.7, 0.6, 0.5], strict=True)]
    result = evaluate_kitti({"0": cars + hard_only}, {"0": dets}, classes=("Car",))
    assert result["num_gt"]["Car"] == {"easy": 3, "moderate": 3, "hard": 5}
    # Easy/moderate: the hard-only detections hit ignored ground truth (neither TP nor FP): 3 TPs.
    for difficulty in ("easy", "moderate"):
        assert ap(result, "Car", "3d", "R40", difficulty) == pytest.approx(2 * R40_ONE)
    assert ap(result, "Car", "3d", "R40", "hard") == pytest.approx(4 * R40_ONE)
    assert ap(result, "Car", "3d", "R11", "hard") == pytest.approx(2 * R11_ONE)  # slots 0 and 4


def test_duplicate_detection_is_false_positive():
    # Car A found twice (.9 and .85): the second is an FP at threshold .8 -> precision 1, 2/3.
    per_frame = one_car_frames([0.9, 0.8])
    per_frame[0][1].append(detected(per_frame[0][0][0], 0.85))
    result = evaluate_kitti(*frames(*per_frame), classes=("Car",))
    for metric in ("bbox", "bev", "3d", "aos"):
        assert ap(result, "Car", metric, "R11") == pytest.approx(R11_ONE)
        assert ap(result, "Car", metric, "R40") == pytest.approx(2 / 3 * R40_ONE)


@pytest.mark.parametrize(
    ("cls", "neighbour", "other"), [("Car", "Van", "Truck"), ("Pedestrian", "Person_sitting", "Cyclist")]
)
def test_neighbour_class_detected_as_key_class_is_ignored(cls, neighbour, other):
    hwl = CAR_HWL if cls == "Car" else PED_HWL
    key = [
        obj(cls, (100, 100, 200, 150), location=(0.0, 1.6, 10.0), dimensions=hwl),
        obj(cls, (250, 100, 350, 150), location=(5.0, 1.6, 10.0), dimensions=hwl),
    ]
    results = {}
    for near_class in (neighbour, other):
        near = obj(near_class, bbox=(400, 100, 500, 150), location=(-5.0, 1.6, 10.0), dimensions=hwl)
        gt = {"0": [*key, near]}
        dt = {"0": [detected(key[0], 0.9), detected(key[1], 0.8), detected(near, 0.95, kind=cls)]}
        results[near_class] = evaluate_kitti(gt, dt, classes=(cls,))
        assert results[near_class]["num_gt"][cls]["easy"] == 2
    # Neighbour: its detection is absorbed -> precision 1, 1. Other class: an FP -> 1/2, 2/3 -> 2/3, 2/3.
    assert ap(results[neighbour], cls, "3d", "R40") == pytest.approx(R40_ONE)
    assert ap(results[other], cls, "3d", "R40") == pytest.approx(2 / 3 * R40_ONE)
    # An undetected neighbour is not a miss either.
    assert (
        evaluate_kitti({"0": [*key, obj(neighbour)]}, {"0": []}, classes=(cls,))["num_gt"][cls]["easy"] == 2
    )


def test_aos_with_flipped_heading():
    car_a, car_b = obj(alpha=0.3, rotation_y=0.3), obj(alpha=-1.0, rotation_y=-1.0, location=(2.0, 1.6, 15.0))
    flipped = detected(car_a, 0.9, alpha=0.3 + math.pi, rotation_y=0.3 - math.pi)
    result = evaluate_kitti(
        *frames(([car_a], [flipped]), ([car_b], [detected(car_b, 0.8)])), classes=("Car",)
    )
    # Similarity 0 then 1: AOS 0/1, 1/2 -> interpolated 1/2, 1/2. Boxes are unchanged by the flip.
    assert ap(result, "Car", "aos", "R11") == pytest.approx(0.5 * R11_ONE)
    assert ap(result, "Car", "aos", "R40") == pytest.approx(0.5 * R40_ONE)
    for metric in ("bbox", "bev", "3d"):
        assert ap(result, "Car", metric, "R40") == pytest.approx(R40_ONE)


def test_aos_not_evaluated_when_a_detection_has_alpha_minus_10():
    per_frame = one_car_frames([0.9, 0.8])
    per_frame[1][1][0] = detected(per_frame[1][0][0], 0.8, alpha=-10.0)
    result = evaluate_kitti(*frames(*per_frame), classes=("Car",))
    assert result["aos_evaluated"] is False
    assert result["results"]["Car"]["strict"]["R40"]["aos"] == {"easy": None, "moderate": None, "hard": None}
    assert "aos" not in format_table(result)
    assert ap(result, "Car", "bbox", "R40") == pytest.approx(R40_ONE)


def test_detections_below_min_height_are_ignored():
    per_frame = one_car_frames([0.9, 0.8])
    # FP with a 30 px box: ignored in easy (< 40 px), a false positive in moderate/hard (>= 25 px).
    per_frame[0][1].append(obj(bbox=(600, 100, 700, 130), location=(10.0, 1.6, 40.0), score=0.95))
    result = evaluate_kitti(*frames(*per_frame), classes=("Car",))
    assert ap(result, "Car", "bbox", "R40", "easy") == pytest.approx(R40_ONE)
    assert ap(result, "Car", "bbox", "R40", "moderate") == pytest.approx(2 / 3 * R40_ONE)
    assert ap(result, "Car", "bbox", "R40", "hard") == pytest.approx(2 / 3 * R40_ONE)


def test_small_detections_absorb_ground_truth():
    # A detection below the minimum height is "ignored" for every class (devkit quirk for other classes):
    # - car A: a 39 px Pedestrian box (.95) takes A when TP scores are collected (highest score first), but
    #   at a threshold the valid car detection (.9) is preferred;
    # - car C: its only detection is a 39 px Car box (.85): matched, neither TP nor FN (nor FP);
    # - an FP car (.82) in the frame of C.
    car_a, car_b = obj(bbox=(100, 100, 200, 150)), obj(bbox=(300, 100, 400, 150), location=(5.0, 1.6, 10.0))
    car_c = obj(bbox=(500, 100, 600, 150), location=(10.0, 1.6, 10.0))
    small_pedestrian = detected(car_a, 0.95, kind="Pedestrian", bbox=(100, 105, 200, 144))
    small_car = detected(car_c, 0.85, bbox=(500, 105, 600, 144))
    fp = obj(bbox=(800, 100, 900, 150), location=(-10.0, 1.6, 30.0), score=0.82)
    gt, dt = frames(
        ([car_a], [detected(car_a, 0.9), small_pedestrian]),
        ([car_b], [detected(car_b, 0.8)]),
        ([car_c], [small_car, fp]),
    )
    result = evaluate_kitti(gt, dt, classes=("Car",))
    assert result["num_gt"]["Car"]["easy"] == 3
    # Easy: TP scores [.8] -> one threshold, where A and B are TPs, C absorbed, one FP: precision 2/3.
    assert ap(result, "Car", "bbox", "R11", "easy") == pytest.approx(2 / 3 * R11_ONE)
    assert ap(result, "Car", "bbox", "R40", "easy") == 0.0
    # Moderate (min height 25): the Pedestrian box is irrelevant, the small car box a TP (2D IoU 39/50):
    # thresholds .9, .85, .8 with precision 1, 1, 3/4.
    assert ap(result, "Car", "bbox", "R40", "moderate") == pytest.approx(1.75 * R40_ONE)


def test_matched_detection_inside_dontcare_is_a_true_positive():
    car_a, car_b = obj(), obj(location=(5.0, 1.6, 10.0))
    gt, dt = frames(
        ([car_a, dontcare((90, 90, 210, 160))], [detected(car_a, 0.9)]), ([car_b], [detected(car_b, 0.8)])
    )
    result = evaluate_kitti(gt, dt, classes=("Car",))
    for metric in ("bbox", "3d"):
        assert ap(result, "Car", metric, "R40") == pytest.approx(R40_ONE)


def test_height_limits_at_the_boundary():
    # Ground truth needs height > 40 for easy (exactly 40 is ignored); a detection is ignored only below 40.
    tall_enough, boundary = (
        obj(bbox=(0, 100, 50, 140.5)),
        obj(bbox=(100, 100, 150, 140), location=(3.0, 1.6, 10.0)),
    )
    fp_at_40 = obj(bbox=(600, 100, 700, 140), location=(10.0, 1.6, 40.0), score=0.95)
    gt = {"0": [tall_enough, boundary], "1": [obj(bbox=(0, 100, 50, 150))]}
    dt = {
        "0": [detected(tall_enough, 0.9), detected(boundary, 0.85), fp_at_40],
        "1": [detected(gt["1"][0], 0.8)],
    }
    result = evaluate_kitti(gt, dt, classes=("Car",))
    assert result["num_gt"]["Car"] == {"easy": 2, "moderate": 3, "hard": 3}
    # Easy: thresholds .9, .8 (the 40 px car absorbs its detection); the 40 px FP counts: 1/2, 2/3.
    assert ap(result, "Car", "bbox", "R40", "easy") == pytest.approx(2 / 3 * R40_ONE)


def test_loose_row_thresholds():
    assert MIN_OVERLAPS["Car"]["loose"] == {"bbox": 0.7, "bev": 0.5, "3d": 0.5}
    assert MIN_OVERLAPS["Pedestrian"]["loose"] == {"bbox": 0.5, "bev": 0.25, "3d": 0.25}
    # Pedestrians (l = 0.8 along x_rect, w = 0.6): moving a copy 0.4 m along x gives BEV and 3D IoU
    # (0.8 - 0.4) / (0.8 + 0.4) = 1/3: a miss at 0.5, a hit at 0.25. The 2D boxes stay identical.
    peds = [
        obj("Pedestrian", (120 * i, 100, 50 + 120 * i, 200), (3.0 * i, 1.6, 10.0), PED_HWL) for i in range(3)
    ]
    shifted = detected(peds[2], 0.7, location=(6.4, 1.6, 10.0))
    result = evaluate_kitti(
        {"0": peds}, {"0": [detected(peds[0], 0.9), detected(peds[1], 0.8), shifted]}, ("Pedestrian",)
    )
    for metric in ("bev", "3d"):
        # strict: the shifted one matches nothing -> TPs .9, .8 -> slots 1, 1; loose: three TPs -> 1, 1, 1.
        assert ap(result, "Pedestrian", metric, "R40", row="strict") == pytest.approx(R40_ONE)
        assert ap(result, "Pedestrian", metric, "R40", row="loose") == pytest.approx(2 * R40_ONE)
    assert ap(result, "Pedestrian", "bbox", "R40", row="strict") == pytest.approx(2 * R40_ONE)
    assert result["min_overlaps"]["Pedestrian"]["loose"]["3d"] == 0.25


def test_score_thresholds_sample_recall():
    # 48 objects, 47 found (see test_missed_object); 2 of 100 found: both kept.
    assert len(score_thresholds(np.linspace(1.0, 0.5, 47), 48)) == 40
    assert len(score_thresholds(np.linspace(1.0, 0.5, 48), 48)) == 41
    np.testing.assert_array_equal(score_thresholds(np.array([0.2, 0.9]), 100), [0.9, 0.2])
    assert score_thresholds(np.zeros(0), 0).size == 0


def test_library_rejects_bad_input():
    with pytest.raises(ValueError, match="Tram"):
        evaluate_kitti({}, {}, classes=("Car", "Tram"))
    gt, dt = frames(*one_car_frames([0.9]))
    dt["000000"] = [gt["000000"][0]]  # a label without a score
    with pytest.raises(InputError, match="000000.*no score"):
        evaluate_kitti(gt, dt)


# ---------------------------------------------------------------- literal devkit transcription


_MIN_HEIGHT, _MAX_OCCLUSION, _MAX_TRUNCATION = (40, 25, 25), (0, 1, 2), (0.15, 0.3, 0.5)
_NEIGHBOUR = {"Car": "Van", "Pedestrian": "Person_sitting"}


def _camera_footprint(o: KittiObject) -> Polygon:
    """BEV rectangle in the camera x-z plane, built like the devkit's toPolygon (independent of the project frame)."""
    h, w, l = o.dimensions
    c, s = math.cos(o.rotation_y), math.sin(o.rotation_y)
    corners = [(l / 2, w / 2), (l / 2, -w / 2), (-l / 2, -w / 2), (-l / 2, w / 2)]
    return Polygon([(c * a + s * b + o.location[0], -s * a + c * b + o.location[2]) for a, b in corners])


def _reference_overlap(d: KittiObject, g: KittiObject, metric: str, over_detection: bool = False) -> float:
    if metric == "bbox":
        a, b = d.bbox, g.bbox
        w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
        if w <= 0 or h <= 0:
            return 0.0
        area_a = (a[2] - a[0]) * (a[3] - a[1])
        return w * h / area_a if over_detection else w * h / (area_a + (b[2] - b[0]) * (b[3] - b[1]) - w * h)
    pd, pg = _camera_footprint(d), _camera_footprint(g)
    inter = pd.intersection(pg).area
    if metric == "bev":
        return inter / (pd.area + pg.area - inter)
    y_max = min(d.location[1], g.location[1])
    y_min = max(d.location[1] - d.dimensions[0], g.location[1] - g.dimensions[0])
    inter *= max(0.0, y_max - y_min)
    return inter / (math.prod(d.dimensions) + math.prod(g.dimensions) - inter)


def _reference_statistics(gt, det, ov, dc_ov, ignored_gt, ignored_det, min_overlap, compute_fp, thresh=0.0):
    """One frame of computeStatistics, loop for loop; ``ov[j][i]`` detection/ground-truth overlaps."""
    no_detection = -10000000
    tp = fp = 0
    scores, similarity = [], 0.0
    assigned = [False] * len(det)
    below = [compute_fp and d.score < thresh for d in det]
    for i, g in enumerate(gt):
        if ignored_gt[i] == -1:
            continue
        det_idx, valid, max_overlap, assigned_ignored = -1, no_detection, 0.0, False
        for j, d in enumerate(det):
            if ignored_det[j] == -1 or assigned[j] or below[j]:
                continue
            o = ov[j][i]
            if not compute_fp and o > min_overlap and d.score > valid:
                det_idx, valid = j, d.score
            elif (
                compute_fp
                and o > min_overlap
                and (o > max_overlap or assigned_ignored)
                and ignored_det[j] == 0
            ):
                max_overlap, det_idx, valid, assigned_ignored = o, j, 1, False
            elif compute_fp and o > min_overlap and valid == no_detection and ignored_det[j] == 1:
                det_idx, valid, assigned_ignored = j, 1, True
        if valid == no_detection:
            continue
        if ignored_gt[i] == 1 or ignored_det[det_idx] == 1:
            assigned[det_idx] = True
        else:
            tp += 1
            scores.append(det[det_idx].score)
            similarity += (1 + math.cos(g.alpha - det[det_idx].alpha)) / 2
            assigned[det_idx] = True
    if compute_fp:
        fp = sum(1 for j in range(len(det)) if not (assigned[j] or ignored_det[j] != 0 or below[j]))
        for k in range(len(dc_ov[0]) if dc_ov else 0):
            for j in range(len(det)):
                if assigned[j] or ignored_det[j] != 0 or below[j]:
                    continue
                if dc_ov[j][k] > min_overlap:
                    assigned[j] = True
                    fp -= 1
    return tp, fp, scores, similarity


def _reference_ap(frames_gt, frames_dt, cls, difficulty, metric, min_overlap):
    """eval_class + getThresholds + the R11/R40 averages, written out from the devkit's description."""
    prepared, n_gt = [], 0
    for gt, det in zip(frames_gt, frames_dt, strict=True):
        ignored_gt = []
        for g in gt:
            valid_class = 1 if g.type == cls else 0 if _NEIGHBOUR.get(cls) == g.type else -1
            ignore = (
                g.occluded > _MAX_OCCLUSION[difficulty]
                or g.truncated > _MAX_TRUNCATION[difficulty]
                or g.bbox[3] - g.bbox[1] <= _MIN_HEIGHT[difficulty]
            )
            ignored_gt.append(
                0
                if valid_class == 1 and not ignore
                else 1
                if valid_class == 0 or ignore and valid_class == 1
                else -1
            )
            n_gt += ignored_gt[-1] == 0
        ignored_det = [
            1 if int(abs(d.bbox[1] - d.bbox[3])) < _MIN_HEIGHT[difficulty] else 0 if d.type == cls else -1
            for d in det
        ]
        dcs = [g for g in gt if g.type == "DontCare"]
        ov = [[_reference_overlap(d, g, metric) for g in gt] for d in det]
        dc_ov = (
            [[_reference_overlap(d, c, "bbox", True) for c in dcs] for d in det] if metric == "bbox" else []
        )
        prepared.append((gt, det, ov, dc_ov, ignored_gt, ignored_det))
    tp_scores = sorted(
        (s for p in prepared for s in _reference_statistics(*p, min_overlap, False)[2]), reverse=True
    )
    thresholds, current = [], 0.0
    for i, s in enumerate(tp_scores):
        left = (i + 1) / n_gt
        right = (i + 2) / n_gt if i < len(tp_scores) - 1 else left
        if (right - current) < (current - left) and i < len(tp_scores) - 1:
            continue
        thresholds.append(s)
        current += 1 / 40.0
    precision, aos = [0.0] * 41, [0.0] * 41
    for k, t in enumerate(thresholds):
        stats = [_reference_statistics(*p, min_overlap, True, t) for p in prepared]
        tp, fp = sum(s[0] for s in stats), sum(s[1] for s in stats)
        precision[k] = tp / (tp + fp) if tp + fp else 0.0
        aos[k] = sum(s[3] for s in stats) / (tp + fp) if tp + fp else 0.0
    for k in range(len(thresholds)):
        precision[k], aos[k] = max(precision[k:]), max(aos[k:])
    return {
        "R11": sum(precision[0:41:4]) / 11 * 100,
        "R40": sum(precision[1:]) / 40 * 100,
        "aos": (sum(aos[0:41:4]) / 11 * 100, sum(aos[1:]) / 40 * 100),
    }


_SIZES = {
    "Car": CAR_HWL,
    "Van": (2.2, 1.9, 5.0),
    "Pedestrian": PED_HWL,
    "Person_sitting": (1.2, 0.6, 0.8),
    "Cyclist": (1.7, 0.6, 1.8),
}
_CONFUSED = {
    "Car": "Van",
    "Van": "Car",
    "Pedestrian": "Cyclist",
    "Cyclist": "Pedestrian",
    "Person_sitting": "Pedestrian",
}


def _random_scene(rng: np.random.Generator, n_frames: int, n_gt: int) -> tuple[dict, dict]:
    """Crowded frames: duplicates, confusions, neighbours, DontCare, small boxes, tied scores, flipped headings."""
    kinds = ["Car", "Car", "Car", "Van", "Pedestrian", "Pedestrian", "Person_sitting", "Cyclist", "DontCare"]
    gt, dt = {}, {}
    for f in range(n_frames):
        g_list, d_list = [], []
        centre = np.array([rng.uniform(-8, 8), rng.uniform(10, 30)])
        for _ in range(n_gt):
            kind = kinds[rng.integers(len(kinds))]
            x1, y1, w = rng.uniform(0, 1000), rng.uniform(100, 250), rng.uniform(20, 150)
            h = float(rng.choice([rng.uniform(15, 120), 25.0, 40.0, 39.5, rng.uniform(41, 120)]))
            bbox = (x1, y1, x1 + w, y1 + h)
            if kind == "DontCare":
                g_list.append(dontcare(bbox))
                inner = (x1 + 0.2 * w, y1 + 0.2 * h, x1 + 0.8 * w, y1 + 0.8 * h)
                d_list.append(
                    obj(["Car", "Pedestrian"][rng.integers(2)], inner, score=round(rng.uniform(), 2))
                )
                continue
            dims = tuple(np.array(_SIZES[kind]) * rng.uniform(0.9, 1.1, 3))
            xz = centre + rng.normal(0, 2.0, 2)
            g = obj(
                kind,
                bbox,
                (xz[0], rng.uniform(1.4, 1.9), xz[1]),
                dims,
                rng.uniform(-3, 3),
                rng.uniform(-3, 3),
            )
            truncated, occluded = float(rng.choice([0, 0.1, 0.15, 0.3, 0.45, 0.6])), int(rng.integers(0, 4))
            g = dataclasses.replace(g, truncated=truncated, occluded=occluded)
            g_list.append(g)
            for _ in range(int(rng.choice([0, 1, 1, 2, 3]))):
                noise = rng.uniform(0, 0.2)
                box = np.array(bbox) + rng.normal(0, noise * 30, 4)
                box[2:] = np.maximum(box[2:], box[:2] + 1)
                d_list.append(
                    obj(
                        _CONFUSED[kind] if rng.random() < 0.15 else kind,
                        tuple(box),
                        tuple(np.array(g.location) + rng.normal(0, noise * 1.5, 3)),
                        tuple(np.array(dims) * rng.uniform(1 - noise, 1 + noise, 3)),
                        g.rotation_y + rng.normal(0, 0.2) + math.pi * (rng.random() < 0.1),
                        g.alpha + rng.normal(0, 0.3) + math.pi * (rng.random() < 0.2),
                        score=round(rng.uniform(), 2),
                    )
                )
        gt[f"{f:06d}"], dt[f"{f:06d}"] = g_list, [d_list[i] for i in rng.permutation(len(d_list))]
    return gt, dt


@pytest.mark.parametrize(("seed", "n_frames", "n_gt"), [(0, 12, 10), (1, 4, 22)])
def test_matches_literal_devkit_transcription(seed, n_frames, n_gt):
    gt, dt = _random_scene(np.random.default_rng(seed), n_frames, n_gt)
    classes = ("Car", "Pedestrian")
    result = evaluate_kitti(gt, dt, classes)
    frames_gt, frames_dt = [gt[k] for k in sorted(gt)], [dt[k] for k in sorted(gt)]
    nonzero = 0
    for cls in classes:
        for row in ("strict", "loose"):
            for metric in ("bbox", "bev", "3d"):
                for d, difficulty in enumerate(DIFFICULTIES):
                    ref = _reference_ap(frames_gt, frames_dt, cls, d, metric, MIN_OVERLAPS[cls][row][metric])
                    got = result["results"][cls][row]
                    assert got["R11"][metric][difficulty] == pytest.approx(ref["R11"], abs=1e-9)
                    assert got["R40"][metric][difficulty] == pytest.approx(ref["R40"], abs=1e-9)
                    if metric == "bbox":
                        assert got["R11"]["aos"][difficulty] == pytest.approx(ref["aos"][0], abs=1e-9)
                        assert got["R40"]["aos"][difficulty] == pytest.approx(ref["aos"][1], abs=1e-9)
                    nonzero += ref["R40"] > 0
    assert nonzero > 20  # the scenes exercise the protocol, not just zeros


# ---------------------------------------------------------------- folders and CLI


@pytest.fixture()
def label_dirs(tmp_path):
    """ground truth for 3 frames (2 easy cars, a DontCare) and predictions for 2 of them (frame 2 has none)."""
    gt_dir, pred_dir = tmp_path / "label_2", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    cars = [obj(location=(0.0, 1.6, 10.0)), obj(location=(3.0, 1.6, 10.0)), obj(location=(0.0, 1.6, 20.0))]
    write_label_file(gt_dir / "000000.txt", [cars[0], dontcare((500, 100, 700, 200))])
    write_label_file(gt_dir / "000001.txt", [cars[1]])
    write_label_file(gt_dir / "000002.txt", [cars[2]])
    write_label_file(pred_dir / "000000.txt", [detected(cars[0], 0.9)])
    (pred_dir / "000001.txt").write_text("")
    return gt_dir, pred_dir


def test_evaluate_folders(label_dirs):
    gt_dir, pred_dir = label_dirs
    result = evaluate_folders(gt_dir, pred_dir, classes=("Car",))
    assert result["num_frames"] == 3 and result["num_gt"]["Car"]["easy"] == 3
    assert ap(result, "Car", "3d", "R11") == pytest.approx(R11_ONE)
    only_first = evaluate_folders(gt_dir, pred_dir, classes=("Car",), frame_ids=["000000"])
    assert only_first["num_gt"]["Car"]["easy"] == 1
    (pred_dir / "000001.txt").write_text(obj().to_line() + "\n")  # 15 fields: no score
    with pytest.raises(InputError, match="000001.txt:1: .*score"):
        evaluate_folders(gt_dir, pred_dir)
    with pytest.raises(InputError, match="does not exist"):
        evaluate_folders(gt_dir / "nope", pred_dir)


def test_cli_prints_table_and_writes_json(label_dirs, tmp_path):
    gt_dir, pred_dir = label_dirs
    out = tmp_path / "metrics" / "kitti.json"
    run = CliRunner().invoke(
        evaluate, ["--gt-dir", str(gt_dir), "--pred-dir", str(pred_dir), "--json", str(out)]
    )
    assert run.exit_code == 0, run.output
    assert "Car AP_R40@0.70, 0.70, 0.70:" in run.output
    assert "Pedestrian AP_R11@0.50, 0.25, 0.25:" in run.output
    assert f"3d   AP:{R11_ONE:.4f}, {R11_ONE:.4f}, {R11_ONE:.4f}" in run.output
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"Car", "Pedestrian", "Cyclist"}
    block = data["results"]["Car"]["strict"]["R40"]
    assert set(block) == {"3d", "bev", "bbox", "aos"} and set(block["3d"]) == set(DIFFICULTIES)
    assert set(data["results"]["Car"]) == {"strict", "loose"} and set(data["results"]["Car"]["loose"]) == {
        "R40",
        "R11",
    }
    assert data["num_gt"]["Car"] == {"easy": 3, "moderate": 3, "hard": 3}
    assert data["min_overlaps"]["Car"]["strict"] == {"bbox": 0.7, "bev": 0.7, "3d": 0.7}
    assert data["results"]["Car"]["strict"]["R11"]["3d"]["easy"] == pytest.approx(R11_ONE)
    assert [p.name for p in out.parent.iterdir()] == ["kitti.json"]  # no temporary left behind


def test_cli_warns_about_frames_without_results(label_dirs, tmp_path):
    gt_dir, pred_dir = label_dirs  # frame 000002 has no results file
    run = CliRunner().invoke(evaluate, ["--gt-dir", str(gt_dir), "--pred-dir", str(pred_dir)])
    assert run.exit_code == 0
    assert "1 of 3 frames have no results file" in run.stderr and "000002.txt" in run.stderr
    frames_file = tmp_path / "predicted.txt"
    frames_file.write_text("000000\n000001\n")
    args = ["--gt-dir", str(gt_dir), "--pred-dir", str(pred_dir), "--frames", str(frames_file)]
    quiet = CliRunner().invoke(evaluate, args)
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr


def test_cli_frames_file_and_classes(label_dirs, tmp_path):
    gt_dir, pred_dir = label_dirs
    frames_file = tmp_path / "val.txt"
    frames_file.write_text("000000\n000001\n")
    out = tmp_path / "m.json"
    args = [
        "--gt-dir",
        str(gt_dir),
        "--pred-dir",
        str(pred_dir),
        "--classes",
        "Car",
        "--frames",
        str(frames_file),
    ]
    run = CliRunner().invoke(evaluate, [*args, "--json", str(out)])
    assert run.exit_code == 0, run.output
    data = json.loads(out.read_text())
    assert list(data["results"]) == ["Car"] and data["num_gt"]["Car"]["easy"] == 2 and data["num_frames"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--classes", "Car,Tram"], "unknown class 'Tram'"),
        (["--classes", "Car,Car"], "twice"),
        (["--classes", ","], "no class"),
    ],
)
def test_cli_rejects_bad_classes(label_dirs, extra, message):
    gt_dir, pred_dir = label_dirs
    run = CliRunner().invoke(evaluate, ["--gt-dir", str(gt_dir), "--pred-dir", str(pred_dir), *extra])
    assert run.exit_code == 2 and message in run.output


def test_cli_missing_gt_dir(tmp_path):
    run = CliRunner().invoke(evaluate, ["--gt-dir", str(tmp_path / "missing"), "--pred-dir", str(tmp_path)])
    assert run.exit_code == 2 and "does not exist" in run.output


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Car 0 0 0 1 2 3 4 1 1 1 0 0 10 0", "000001.txt:2: result line has 15 fields"),
        ("Car 0 0 0 1 2 3 4 1 1 1 0 0 ten 0 0.5", "000001.txt:2: a numeric field is not a number"),
        ("Car 0 0", "000001.txt:2: expected 15 fields"),
    ],
)
def test_cli_malformed_result_line(label_dirs, tmp_path, line, message):
    gt_dir, pred_dir = label_dirs
    (pred_dir / "000001.txt").write_text(detected(obj(), 0.5).to_line() + "\n" + line + "\n")
    out = tmp_path / "m.json"
    run = CliRunner().invoke(
        evaluate, ["--gt-dir", str(gt_dir), "--pred-dir", str(pred_dir), "--json", str(out)]
    )
    assert run.exit_code == 1 and message in run.output
    assert not out.exists()


# ---------------------------------------------------------------- speed


@pytest.mark.slow
def test_speed_on_a_kitti_val_sized_set():
    """3769 frames x 30 ground truth x 100 detections must evaluate in seconds."""
    rng = np.random.default_rng(0)
    gt, dt = {}, {}
    for f in range(3769):
        g_list = [
            obj(
                "Car",
                (x, 150, x + 60, 200),
                (rng.uniform(-20, 20), 1.6, rng.uniform(5, 60)),
                rotation_y=rng.uniform(-3, 3),
            )
            for x in rng.uniform(0, 1100, 30)
        ]
        d_list = [detected(g, float(rng.uniform())) for g in g_list[:25]]
        d_list += [
            obj("Car", (x, 150, x + 60, 200), (rng.uniform(-20, 20), 1.6, rng.uniform(5, 60)), score=0.1)
            for x in rng.uniform(0, 1100, 75)
        ]
        gt[f"{f:06d}"], dt[f"{f:06d}"] = g_list, d_list
    start = time.perf_counter()
    result = evaluate_kitti(gt, dt)
    elapsed = time.perf_counter() - start
    assert result["num_gt"]["Car"]["easy"] == 3769 * 30
    assert elapsed < 60.0, f"evaluation took {elapsed:.1f} s"
