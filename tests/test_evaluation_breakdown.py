"""The error breakdown (stereodistill/evaluation/breakdown.py, ``stereodistill breakdown``): hand-built scenes
whose every number is known.

Geometry used below: a Car of ``h w l = 1.5 1.6 3.9`` with ``rotation_y = 0`` has its length along the camera x
axis and its width (1.6 m) along the depth z. Moving a copy by ``d`` in depth leaves a footprint overlap of
``(1.6 - d) / (1.6 + d)`` in BEV and, with equal heights, the same 3D IoU: 0.6 for ``d = 0.4``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from kitti_fixtures import KittiFixture

from stereodistill.data.labels import KittiObject, write_label_file
from stereodistill.data.prepared import prepare_split
from stereodistill.errors import InputError
from stereodistill.evaluation.breakdown import (
    BreakdownSettings,
    box_errors,
    distance_bins,
    error_breakdown,
    format_breakdown,
    ground_truth_from_folder,
    ground_truth_from_split,
    read_predictions,
)
from stereodistill.geometry.boxes import kitti_to_project_boxes

CAR_HWL = (1.5, 1.6, 3.9)
PED_HWL = (1.75, 0.6, 0.8)


def obj(
    kind: str = "Car",
    depth: float = 10.0,
    x: float = 0.0,
    y: float = 1.65,
    dimensions: tuple[float, float, float] = CAR_HWL,
    rotation_y: float = 0.0,
    occluded: int = 0,
    height_px: float = 50.0,
    score: float | None = None,
) -> KittiObject:
    """An object at camera ``(x, y, depth)`` (bottom centre, m) with a 2D box ``height_px`` tall."""
    bbox = (100.0, 100.0, 200.0, 100.0 + height_px)
    return KittiObject(kind, 0.0, occluded, 0.0, bbox, dimensions, (x, y, depth), rotation_y, score)


def det(gt: KittiObject, score: float = 0.9, **changes) -> KittiObject:
    """A detection equal to ``gt`` with a score; ``changes`` override obj() arguments."""
    args = dict(
        kind=gt.type,
        depth=gt.location[2],
        x=gt.location[0],
        y=gt.location[1],
        dimensions=gt.dimensions,
        rotation_y=gt.rotation_y,
        height_px=gt.bbox[3] - gt.bbox[1],
    )
    args.update(changes)
    return obj(**args, score=score)


def car_block(gt: dict, dt: dict, settings: BreakdownSettings | None = None) -> dict:
    return error_breakdown(gt, dt, settings)["classes"]["Car"]


# ------------------------------------------------------------------------------------ box errors
def test_a_box_shifted_in_depth_gives_that_depth_error_and_a_localisation_failure():
    gt = obj(depth=10.0)
    car = car_block({"0": [gt]}, {"0": [det(gt, depth=10.4)]})
    errors = car["errors"]["all"]
    assert errors["num_matched"] == 1
    assert errors["mae"]["z"] == pytest.approx(0.4, abs=1e-9)
    assert errors["bias"]["z"] == pytest.approx(0.4, abs=1e-9)
    for name in ("x", "y", "l", "w", "h", "heading"):
        assert errors["mae"][name] == pytest.approx(0.0, abs=1e-9)
    assert errors["half_turn_share"] == 0.0
    # BEV and 3D IoU are 1.2 / 2.0 = 0.6: found, above BEV 0.5, below the Car's strict 0.7.
    recall = car["recall"]["all"]["all"]
    assert recall == {
        "num_gt": 1,
        "recall_3d_strict": 0.0,
        "recall_bev": 1.0,
        "missed": 0.0,
        "localisation_failure": 1.0,
    }


def test_each_component_error_lands_in_its_own_column():
    gt = obj(depth=12.0, x=2.0)
    moved = det(gt, x=2.3, dimensions=(1.7, 1.5, 4.1))  # h +0.2, w -0.1, l +0.2; bottom stays at y = 1.65
    errors = car_block({"0": [gt]}, {"0": [moved]})["errors"]["all"]
    assert errors["bias"]["x"] == pytest.approx(0.3)
    assert errors["bias"]["y"] == pytest.approx(0.0, abs=1e-9)
    assert errors["bias"]["z"] == pytest.approx(0.0, abs=1e-9)
    assert errors["bias"]["h"] == pytest.approx(0.2)
    assert errors["bias"]["w"] == pytest.approx(-0.1)
    assert errors["bias"]["l"] == pytest.approx(0.2)
    assert errors["mae"]["w"] == pytest.approx(0.1)


def test_a_flipped_heading_is_a_half_turn_with_no_error_modulo_pi():
    flipped_gt, turned_gt = obj(depth=10.0, rotation_y=0.3), obj(depth=20.0, rotation_y=-0.2)
    dt = [det(flipped_gt, rotation_y=0.3 - math.pi), det(turned_gt, rotation_y=-0.1)]
    car = car_block({"0": [flipped_gt, turned_gt]}, {"0": dt})
    errors = car["errors"]["all"]
    assert errors["half_turn_share"] == 0.5
    assert errors["mae"]["heading"] == pytest.approx(0.05)  # (0 + 0.1) / 2
    assert car["errors"]["0-15"]["half_turn_share"] == 1.0
    assert car["errors"]["15-25"]["half_turn_share"] == 0.0
    # A reversed box covers the GT exactly: it is a strict hit, the half-turn shows only here.
    assert car["recall"]["distance"]["0-15"]["recall_3d_strict"] == 1.0


def test_heading_errors_wrap_across_pi():
    gt = kitti_to_project_boxes(
        np.array([[0.0, 1.65, 10.0]] * 2), np.array([CAR_HWL] * 2), np.array([3.1, 1.0])
    )
    dt = kitti_to_project_boxes(
        np.array([[0.0, 1.65, 10.0]] * 2), np.array([CAR_HWL] * 2), np.array([-3.1, 1.0 + 2.0])
    )
    errors, half_turn = box_errors(gt, dt)
    assert errors["heading"] == pytest.approx([2 * math.pi - 6.2, 2.0 - math.pi])
    assert half_turn.tolist() == [False, True]


# ------------------------------------------------------------------------------------ recall groups
def far_car_scene() -> tuple[dict, dict]:
    """Near (z 10) and middle (z 20) cars found exactly; a far (z 30), occluded, 30 px tall car missed."""
    near, middle = obj(depth=10.0), obj(depth=20.0, x=3.0)
    far = obj(depth=30.0, x=-3.0, occluded=2, height_px=30.0)
    return {"0": [near, middle, far]}, {"0": [det(near), det(middle)]}


def test_a_missed_far_car_lowers_only_the_far_bin():
    gt, dt = far_car_scene()
    recall = car_block(gt, dt)["recall"]
    distance = recall["distance"]
    assert [distance[b]["num_gt"] for b in ("0-15", "15-25", "25-45")] == [1, 1, 1]
    assert distance["0-15"]["recall_3d_strict"] == distance["15-25"]["recall_3d_strict"] == 1.0
    assert distance["25-45"]["recall_3d_strict"] == 0.0
    assert distance["25-45"]["missed"] == 1.0
    assert distance["25-45"]["localisation_failure"] == 0.0
    assert recall["all"]["all"]["recall_3d_strict"] == pytest.approx(2 / 3)
    assert recall["all"]["all"]["missed"] == pytest.approx(1 / 3)


def test_occlusion_and_difficulty_groups_follow_the_labels_and_the_kitti_rule():
    gt, dt = far_car_scene()
    recall = car_block(gt, dt)["recall"]
    assert recall["occlusion"]["0"]["num_gt"] == 2 and recall["occlusion"]["0"]["recall_3d_strict"] == 1.0
    assert recall["occlusion"]["2"]["num_gt"] == 1 and recall["occlusion"]["2"]["missed"] == 1.0
    assert recall["occlusion"]["1"]["num_gt"] == 0 and recall["occlusion"]["1"]["recall_3d_strict"] is None
    # The far car (occlusion 2, 30 px) is hard only; difficulties are cumulative as in KITTI.
    assert (
        recall["difficulty"]["easy"]["num_gt"] == 2
        and recall["difficulty"]["easy"]["recall_3d_strict"] == 1.0
    )
    assert recall["difficulty"]["moderate"]["num_gt"] == 2
    assert recall["difficulty"]["hard"]["num_gt"] == 3
    assert recall["difficulty"]["hard"]["recall_3d_strict"] == pytest.approx(2 / 3)


def test_distance_bins_are_half_open_and_ignore_what_lies_beyond():
    assert distance_bins(np.array([0.0, 14.99, 15.0, 44.9, 45.0, -1.0]), (0, 15, 25, 45)).tolist() == [
        0,
        0,
        1,
        2,
        -1,
        -1,
    ]
    car = car_block({"0": [obj(depth=50.0)]}, {"0": []})
    assert car["beyond_distance_bins"] == 1
    assert car["recall"]["all"]["all"]["num_gt"] == 1
    assert sum(g["num_gt"] for g in car["recall"]["distance"].values()) == 0


# ------------------------------------------------------------------------------------ matching
def test_detections_below_the_score_threshold_do_not_count():
    gt = obj()
    dt = {"0": [det(gt, score=0.2)]}
    assert car_block({"0": [gt]}, dt)["recall"]["all"]["all"]["missed"] == 1.0
    lenient = BreakdownSettings(score_threshold=0.1)
    assert car_block({"0": [gt]}, dt, lenient)["recall"]["all"]["all"]["recall_3d_strict"] == 1.0


def test_matching_is_one_to_one_and_prefers_the_larger_bev_iou():
    first, second = obj(depth=10.0), obj(depth=11.2)  # 0.4 m of overlapping width between them
    only = det(first, depth=10.8)  # BEV IoU 0.8 / 2.4 with the first, 1.2 / 2.0 with the second
    car = car_block({"0": [first, second]}, {"0": [only]})
    assert car["errors"]["all"]["num_matched"] == 1
    assert car["errors"]["all"]["bias"]["z"] == pytest.approx(-0.4)  # matched to the second (z 11.2)
    assert car["recall"]["all"]["all"]["missed"] == 0.5
    assert car["unmatched_detections"] == 0


def test_a_box_barely_touching_is_missed_and_other_classes_never_match():
    gt = obj(depth=10.0)
    far_off = det(gt, depth=11.35)  # BEV IoU 0.25 / 2.95 = 0.085, not above 0.1: not found
    pedestrian = det(gt, kind="Pedestrian", dimensions=PED_HWL)
    van = obj(kind="Van", depth=20.0)
    result = error_breakdown({"0": [gt, van]}, {"0": [far_off, pedestrian, det(van, kind="Car")]})
    car = result["classes"]["Car"]
    assert car["recall"]["all"]["all"]["num_gt"] == 1  # the Van is not a Car to find
    assert car["recall"]["all"]["all"]["missed"] == 1.0
    assert car["num_detections"] == 2 and car["unmatched_detections"] == 2
    assert result["classes"]["Pedestrian"]["recall"]["all"]["all"]["num_gt"] == 0
    assert result["classes"]["Pedestrian"]["unmatched_detections"] == 1


def test_the_table_shows_the_groups_and_the_errors():
    gt, dt = far_car_scene()
    table = format_breakdown(error_breakdown(gt, dt))
    assert "Car (strict 3D IoU > 0.7)" in table
    assert "dist 25-45" in table and "diff hard" in table and "half-turn" in table


# ------------------------------------------------------------------------------------ files and CLI
def write_frames(folder: Path, frames: dict[str, list[KittiObject]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for frame_id, objects in frames.items():
        write_label_file(folder / f"{frame_id}.txt", objects)
    return folder


def test_predictions_of_frames_outside_the_ground_truth_are_refused_naming_the_file(tmp_path):
    pred = write_frames(tmp_path / "pred", {"000000": [det(obj())], "000007": []})
    with pytest.raises(
        InputError, match="000007.txt: results file of a frame that is not in the ground truth"
    ):
        read_predictions(pred, ["000000", "000001"])


def test_a_ground_truth_frame_without_results_file_is_an_error_unless_allowed(tmp_path):
    pred = write_frames(tmp_path / "pred", {"000000": [det(obj())]})
    with pytest.raises(
        InputError, match=r"000001\.txt: results file of ground-truth frame 000001 is missing"
    ):
        read_predictions(pred, ["000000", "000001"])
    detections, missing = read_predictions(pred, ["000000", "000001"], missing_ok=True)
    assert missing == ["000001"] and len(detections["000000"]) == 1
    empty = write_frames(tmp_path / "empty", {})
    with pytest.raises(InputError, match="empty: no results file"):
        read_predictions(empty, ["000000"], missing_ok=True)


def test_a_detection_without_score_is_refused_with_file_and_line(tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "000000.txt").write_text(obj().to_line() + "\n")
    with pytest.raises(InputError, match=r"000000\.txt:1: .*16th field"):
        read_predictions(pred, ["000000"])


def test_cli_prints_the_table_and_writes_the_json(run_cli, tmp_path):
    gt, dt = far_car_scene()
    labels = write_frames(tmp_path / "label_2", {"000000": gt["0"]})
    pred = write_frames(tmp_path / "pred", {"000000": dt["0"]})
    out = tmp_path / "breakdown.json"
    result = run_cli("breakdown", "--gt-dir", labels, "--pred-dir", pred, "--json", out)
    assert result.exit_code == 0, result.output
    assert "dist 25-45" in result.output
    written = json.loads(out.read_text())
    far = written["classes"]["Car"]["recall"]["distance"]["25-45"]
    assert far["missed"] == 1.0 and written["settings"]["score_threshold"] == 0.3


def test_cli_fails_on_a_mismatched_frame_naming_the_file(run_cli, tmp_path):
    labels = write_frames(tmp_path / "label_2", {"000000": [obj()]})
    pred = write_frames(tmp_path / "pred", {"000000": [], "000009": []})
    result = run_cli("breakdown", "--gt-dir", labels, "--pred-dir", pred)
    assert result.exit_code == 1
    assert f"{pred / '000009.txt'}: results file of a frame that is not in the ground truth" in result.output


def test_cli_fails_on_a_bad_predictions_dir_or_ground_truth_choice(run_cli, tmp_path):
    labels = write_frames(tmp_path / "label_2", {"000000": [obj()]})
    result = run_cli("breakdown", "--gt-dir", labels, "--pred-dir", tmp_path / "nowhere")
    assert result.exit_code == 2 and "nowhere" in result.output
    pred = write_frames(tmp_path / "pred", {"000000": []})
    result = run_cli("breakdown", "--pred-dir", pred)
    assert result.exit_code == 2 and "exactly one of --gt-dir or --gt-split" in result.output
    (pred / "000000.txt").write_text("Car 0 0 0 1 2 3\n")
    result = run_cli("breakdown", "--gt-dir", labels, "--pred-dir", pred)
    assert result.exit_code == 1 and f"{pred / '000000.txt'}:1: expected 15 fields" in result.output


def test_a_prepared_split_gives_the_same_ground_truth_as_its_label_files(
    run_cli, kitti_readonly: KittiFixture, tmp_path
):
    split = tmp_path / "train.h5"
    prepare_split(kitti_readonly.root, kitti_readonly.split_file("train"), split, progress=False)
    frames = ["000000", "000001"]
    from_split = ground_truth_from_split(split)
    assert from_split == ground_truth_from_folder(kitti_readonly.root / "training" / "label_2", frames)
    pred = write_frames(
        tmp_path / "pred", {f: [det(o) for o in from_split[f] if o.type == "Car"] for f in frames}
    )
    out = tmp_path / "b.json"
    result = run_cli("breakdown", "--gt-split", split, "--pred-dir", pred, "--json", out)
    assert result.exit_code == 0, result.output
    car = json.loads(out.read_text())["classes"]["Car"]
    assert car["recall"]["all"]["all"] == {
        "num_gt": 1,
        "recall_3d_strict": 1.0,
        "recall_bev": 1.0,
        "missed": 0.0,
        "localisation_failure": 0.0,
    }
