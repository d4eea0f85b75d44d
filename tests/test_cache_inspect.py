"""``stereodistill cache show`` and ``cache stats`` on the tiny teacher cache of tests/cache_fixtures.py."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from stereodistill.cache.reader import TeacherCache
from stereodistill.cache.show import (
    cell_feature_norms,
    cell_max_scores,
    covered_detections,
    frame_ground_truth,
    heat_colours,
    render_bev,
)
from stereodistill.cache.stats import StatsOptions, cache_stats, class_scores
from stereodistill.data.prepared import PreparedSplit
from stereodistill.data.visualise import CLASS_COLOURS
from stereodistill.distill.pilots import pilot_ious
from stereodistill.errors import InputError
from stereodistill.geometry.iou import iou_3d, iou_bev
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import TargetAssigner, ground_truth_from_labels
from stereodistill.head.settings import DecodeSettings

GREEN = CLASS_COLOURS["Car"]
WHITE = (255, 255, 255)


@pytest.fixture(scope="module")
def store(teacher_cache_setup: dict) -> Path:
    return Path(teacher_cache_setup["params"]["cache"]["store"])


@pytest.fixture(scope="module")
def split_path(teacher_cache_setup: dict) -> Path:
    return Path(teacher_cache_setup["split"])


def _tiny_grid() -> AnchorGrid:
    """4 x 6 cells of 1 m (x 0..6, y -2..2), classes Car and Pedestrian, two rotations."""
    return AnchorGrid.from_params(
        {
            "point_cloud_range": [0.0, -2.0, -3.0, 6.0, 2.0, 1.0],
            "bev_cell_size": 1.0,
            "rotations": [0.0, math.pi / 2],
            "classes": [
                {"name": "Car", "size": [3.9, 1.6, 1.56], "bottom_z": -1.65, "matched_iou": 0.6,
                 "unmatched_iou": 0.45},
                {"name": "Pedestrian", "size": [0.8, 0.6, 1.73], "bottom_z": -1.65, "matched_iou": 0.5,
                 "unmatched_iou": 0.35},
            ],
        }
    )  # fmt: skip


def _count(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((image == np.array(colour, dtype=np.uint8)).all(axis=2).sum())


# ------------------------------------------------------------------------------------------ show: pieces
def test_cell_scores_and_class_scores_follow_the_anchor_order():
    grid = _tiny_grid()  # ny 4, nx 6, C 2, R 2
    logits = torch.full((grid.num_anchors, grid.num_classes), -5.0)
    # Cell (iy 1, ix 4), class-Car anchor of rotation 1, its Pedestrian logit: counts for the cell score only.
    logits[grid.anchor_index(1, 4, 0, 1), 1] = 2.0
    # Cell (iy 3, ix 0), Pedestrian anchor of rotation 0, its own (Pedestrian) logit.
    logits[grid.anchor_index(3, 0, 1, 0), 1] = 1.0
    cells = cell_max_scores(logits, grid)
    assert cells.shape == (4, 6)
    expected = np.full((4, 6), 1 / (1 + math.exp(5.0)), np.float32)
    expected[1, 4] = 1 / (1 + math.exp(-2.0))
    expected[3, 0] = 1 / (1 + math.exp(-1.0))
    np.testing.assert_allclose(cells, expected, rtol=1e-6, atol=1e-7)
    scores = class_scores(logits, grid)  # (C, ny * nx * R): own-class logits only
    assert scores.shape == (2, 4 * 6 * 2)
    assert torch.allclose(scores[0], torch.sigmoid(torch.tensor(-5.0)))  # the 2.0 is not a Car logit
    ped = torch.full((48,), float(torch.sigmoid(torch.tensor(-5.0))))
    ped[(3 * 6 + 0) * 2 + 0] = float(torch.sigmoid(torch.tensor(1.0)))
    assert torch.allclose(scores[1], ped)


def test_render_puts_cells_and_boxes_where_the_bev_convention_says():
    grid = _tiny_grid()
    scores = np.zeros((4, 6), np.float32)
    scores[0, 5] = 1.0  # iy 0 (rightmost, y -2..-1), ix 5 (farthest, x 5..6)
    box = np.array([[2.5, 0.5, -0.87, 1.0, 0.6, 1.7, 0.0]])  # centre of cell (iy 2, ix 2), facing +x
    image = np.asarray(render_bev(grid, scores, box, np.zeros((0, 7)), [], pixels_per_cell=10))
    assert image.shape == (60, 40, 3)  # nx * 10 rows, ny * 10 columns
    # Forward is up, left is left: cell (iy 0, ix 5) is the top-right 10 x 10 block, in the score-1 colour.
    assert (image[:10, 30:] == heat_colours(np.array(1.0))).all()
    assert (image[10:, :] != heat_colours(np.array(1.0))).any(axis=2).all()
    # The box outline: its long side runs from x 2 to 3 (rows 30..40) at y 0.8 and 0.2 (columns 12 and 18).
    white = (image == np.array(WHITE, np.uint8)).all(axis=2)
    assert white[32:38, 11:14].any() and white[32:38, 17:20].any()
    assert not white[:25].any() and not white[41:44].any()  # (the camera triangle lies below x = 1.5)
    # The heading tick from the centre (row 35, column 15) towards +x (up) to the front face (row 30).
    assert white[31:35, 15].all()


def test_covered_detections_are_cached_boxes_above_the_threshold_after_nms(store):
    cached = TeacherCache(store).read("000001", "identity")
    settings = DecodeSettings(score_threshold=0.3, nms_iou_threshold=0.01)
    det = covered_detections(cached, settings)
    assert len(det) > 0
    anchor_scores = torch.sigmoid(cached.cls_logits[cached.covered_index]).max(dim=1).values
    candidates = anchor_scores >= 0.3
    # Every detection is a cached box (exactly) with its anchor's score, above the threshold.
    rows = [int(torch.nonzero((cached.boxes == b).all(dim=1)).flatten()[0]) for b in det.boxes]
    assert torch.equal(det.scores, anchor_scores[rows]) and bool((det.scores >= 0.3).all())
    # NMS: kept boxes do not overlap; every candidate left out overlaps a kept box scoring at least as high.
    overlap = iou_bev(det.boxes.double(), det.boxes.double())
    assert (overlap.fill_diagonal_(0) <= 0.01).all()
    dropped = torch.ones(len(cached.boxes), dtype=torch.bool)
    dropped[rows] = False
    dropped &= candidates
    cross = iou_bev(cached.boxes[dropped].double(), det.boxes.double())
    better = det.scores[None, :] >= anchor_scores[dropped][:, None]
    assert ((cross > 0.01) & better).any(dim=1).all()


def test_ground_truth_is_mirrored_for_hflip(split_path):
    split = PreparedSplit(split_path)
    boxes, types = frame_ground_truth(split, "000002", "identity")
    flipped, flipped_types = frame_ground_truth(split, "000002", "hflip")
    labels = split.labels(2)
    assert types == flipped_types == [str(t) for t in labels.types if t != "DontCare"]
    np.testing.assert_array_equal(flipped[:, 1], -boxes[:, 1])
    np.testing.assert_array_equal(flipped[:, [0, 2, 3, 4, 5]], boxes[:, [0, 2, 3, 4, 5]])
    turned = np.remainder(flipped[:, 6] + boxes[:, 6] + np.pi, 2 * np.pi) - np.pi
    np.testing.assert_allclose(turned, 0.0, atol=1e-6)


# ------------------------------------------------------------------------------------------ show: CLI
def test_cli_show_writes_the_picture_with_ground_truth(store, split_path, tmp_path, run_cli):
    bare, with_gt = tmp_path / "bare.png", tmp_path / "out" / "gt.png"
    result = run_cli("cache", "show", store, "--frame", "000001", "--png", bare)
    assert result.exit_code == 0, result.output
    assert "teacher boxes with score >= 0.3" in result.output
    result = run_cli(
        "cache",
        "show",
        store,
        "--frame",
        "000001",
        "--view",
        "hflip",
        "--prepared",
        split_path,
        "--png",
        with_gt,
    )
    assert result.exit_code == 0, result.output
    n_gt = len(frame_ground_truth(PreparedSplit(split_path), "000001", "hflip")[1])
    assert f"{n_gt} ground-truth boxes" in result.output and n_gt > 0
    for path in (bare, with_gt):
        image = Image.open(path)
        assert image.size == (96 * 4, 96 * 4) and image.mode == "RGB"
        pixels = np.asarray(image)
        assert (pixels.max(axis=2) > 0).mean() > 0.05  # not blank
        assert _count(pixels, WHITE) > 500  # teacher boxes
    assert _count(np.asarray(Image.open(bare)), GREEN) == 0
    assert _count(np.asarray(Image.open(with_gt)), GREEN) > 200  # the Car boxes of the ground truth
    # A threshold below the cache's score floor (0.1) draws what it can and says what is missing.
    result = run_cli("cache", "show", store, "--frame", "000000", "--score-threshold", "0.05", "--png", bare)
    assert result.exit_code == 0 and "below this frame's cached score floor 0.1" in result.stderr


def test_cli_show_names_an_unknown_frame_view_or_split_frame(store, split_path, tmp_path, run_cli):
    png = tmp_path / "x.png"
    result = run_cli("cache", "show", store, "--frame", "123456", "--png", png)
    assert result.exit_code == 1 and "frame '123456' is not in the teacher cache" in result.stderr
    result = run_cli("cache", "show", store, "--frame", "000001", "--view", "vflip", "--png", png)
    assert result.exit_code == 1
    assert "view 'vflip' is not in the teacher cache (it holds ['identity', 'hflip'])" in result.stderr
    other = tmp_path / "other.h5"
    shutil.copyfile(split_path, other)
    with h5py.File(other, "r+") as f:
        f["frame_id"][...] = np.array(["000010", "000011", "000012", "000013"], dtype=object)
    result = run_cli("cache", "show", store, "--frame", "000001", "--prepared", other, "--png", png)
    assert result.exit_code == 1
    assert f"{other}: frame '000001' is not in the prepared split (4 frames, 000010..000013)" in result.stderr
    assert not png.exists()


# ------------------------------------------------------------------------------------------ stats
def _direct_frame_counts(store: Path, split_path: Path, frame: int, view: str, threshold: float) -> dict:
    """One frame's numbers computed here from scratch: anchors above, positives and IoU passes per class."""
    cache = TeacherCache(store)
    grid = cache.grid
    cached = cache.read(frame, view)
    labels = PreparedSplit(split_path).labels(frame)
    gt = ground_truth_from_labels(labels.types.tolist(), labels.boxes, grid)
    boxes = gt.boxes.clone()
    if view == "hflip":
        boxes[:, 1] *= -1
        boxes[:, 6] = -boxes[:, 6]
    targets = TargetAssigner(grid).assign(boxes, gt.classes)
    anchor_class = grid.anchor_class_ids()
    probs = torch.sigmoid(cached.cls_logits)
    out = {"above": {}, "positives": {}, "whole": {}, "centre": {}, "size": {}, "heading": {}}
    for c, name in enumerate(grid.class_names):
        out["above"][name] = int((probs[anchor_class == c, c] >= threshold).sum())
        anchors = torch.nonzero(targets.positive & (targets.labels == c)).flatten()
        slots = [int(torch.nonzero(cached.covered_index == a)[0]) for a in anchors]
        teacher, matched = cached.boxes[slots].double(), boxes[targets.matched_gt[anchors]].double()
        limit = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}[name]
        out["positives"][name] = len(anchors)
        out["whole"][name] = int((iou_3d(teacher, matched, aligned=True) >= limit).sum())
        pilots = pilot_ious(teacher, matched, "groups", "3d")
        for k, comp in enumerate(("centre", "size", "heading")):
            out[comp][name] = int((pilots[:, k] >= limit).sum())
    out["above"]["all"] = int((probs.max(dim=1).values >= threshold).sum())
    return out


@pytest.mark.parametrize("view", ["identity", "hflip"])
def test_stats_of_one_frame_match_a_direct_computation(store, split_path, view):
    stats = cache_stats(store, split_path, StatsOptions(view=view, max_frames=1), progress=False)
    assert stats["frames"] == 1 and stats["view"] == view
    direct = _direct_frame_counts(store, split_path, 0, view, 0.3)
    for name in ("Car", "Pedestrian", "Cyclist", "all"):
        above = stats["anchors_above"][name]["0.3"]
        assert above["mean"] == above["max"] == direct["above"][name] and above["max_frame"] == "000000"
    assert direct["positives"]["Car"] > 0
    for name in ("Car", "Pedestrian", "Cyclist"):
        block = stats["positives"]["classes"][name]
        assert block["positives"] == direct["positives"][name]
        assert block["whole_box"]["count"] == direct["whole"][name]
        for comp in ("centre", "size", "heading"):
            assert block["components"][comp]["count"] == direct[comp][name]


def test_cli_stats_writes_json_with_consistent_numbers(store, split_path, tmp_path, run_cli):
    out = tmp_path / "stats" / "s.json"
    result = run_cli("cache", "stats", store, "--prepared", split_path, "--json", out)
    assert result.exit_code == 0, result.output
    assert "positives whose teacher box passes (3d IoU >= class threshold)" in result.output
    stats = json.loads(out.read_text())
    assert stats["frames"] == 4 and stats["classes"] == ["Car", "Pedestrian", "Cyclist"]
    hist = stats["score_histogram"]
    assert hist["edges"][0] == 0.0 and hist["edges"][-1] == 1.0
    for name in stats["classes"]:  # every anchor of the class in every frame, in exactly one bin
        assert sum(hist["counts"][name]) == 4 * hist["anchors_per_frame"][name] == 4 * 96 * 96 * 2
    above = stats["anchors_above"]
    assert above["thresholds"] == [0.1, 0.3, 0.5, 0.7]
    for name in [*stats["classes"], "all"]:
        means = [above[name][f"{t:g}"]["mean"] for t in above["thresholds"]]
        assert means == sorted(means, reverse=True) and means[0] > 0
    # Anchors of different classes are disjoint and an anchor's score is at least its class score.
    for t in ("0.1", "0.3", "0.5", "0.7"):
        assert above["all"][t]["mean"] >= sum(above[n][t]["mean"] for n in stats["classes"])
    pos = stats["positives"]
    assert pos["component_names"] == ["centre", "size", "heading"]
    assert pos["all"]["positives"] == sum(pos["classes"][n]["positives"] for n in stats["classes"]) > 0
    for block in [*pos["classes"].values(), pos["all"]]:
        shares = [
            block["whole_box"],
            block["all_components"],
            block["any_component"],
            *block["components"].values(),
        ]
        if block["positives"] == 0:
            assert all(s["share"] is None for s in shares)
            continue
        for s in shares:
            assert 0.0 <= s["share"] <= 1.0 and s["share"] == s["count"] / block["positives"]
        whole = block["whole_box"]["count"]
        # Not a theorem (a rotated teacher box can overlap more than its size pilot) but true here.
        assert all(c["count"] >= whole for c in block["components"].values())
        every, some = block["all_components"]["count"], block["any_component"]["count"]
        assert every <= min(c["count"] for c in block["components"].values())
        assert some >= max(c["count"] for c in block["components"].values())
    assert pos["classes"]["Car"]["iou_threshold"] == 0.7


def test_cli_stats_errors_name_the_problem(store, split_path, tmp_path, run_cli):
    result = run_cli("cache", "stats", store, "--prepared", split_path, "--view", "vflip")
    assert result.exit_code == 1 and "view 'vflip' is not in the teacher cache" in result.stderr
    result = run_cli("cache", "stats", store, "--prepared", split_path, "--threshold", "Car")
    assert result.exit_code == 2 and "expected NAME=VALUE, got 'Car'" in result.output
    other = tmp_path / "other.h5"
    shutil.copyfile(split_path, other)
    with h5py.File(other, "r+") as f:
        f["frame_id"][...] = np.array(["000000", "000001", "000002", "000099"], dtype=object)
    result = run_cli("cache", "stats", store, "--prepared", other, "--no-progress")
    assert result.exit_code == 1
    assert (
        "1 frame(s) of the teacher cache are not in the prepared split (first: ['000003'])" in result.stderr
    )
    with pytest.raises(InputError, match=r"no IoU threshold for class\(es\) \['Cyclist'\]"):
        cache_stats(store, split_path, StatsOptions(iou_thresholds={"Car": 0.7, "Pedestrian": 0.5}))


def test_feature_heat_map_lights_exactly_the_in_box_cells(store, split_path, tmp_path, run_cli):
    cache = TeacherCache(store)
    features = cache.read_features("000001", "hflip")
    norms = cell_feature_norms(features, cache.grid)
    lit = np.flatnonzero(norms.reshape(-1) > 0)
    np.testing.assert_array_equal(lit, features.cell.numpy()[features.bev.norm(dim=1).numpy() > 0])
    assert norms.max() == pytest.approx(1.0)
    png = tmp_path / "features.png"
    result = run_cli(
        "cache", "show", store, "--frame", "000001", "--view", "hflip", "--heat", "features", "--png", png
    )
    assert result.exit_code == 0, result.output
    heat = np.asarray(Image.open(png))
    score_png = tmp_path / "score.png"
    run_cli("cache", "show", store, "--frame", "000001", "--view", "hflip", "--png", score_png)
    assert not np.array_equal(heat, np.asarray(Image.open(score_png)))
    # Outside the boxes the feature map is black (the heat map's 0), so most of the picture is.
    assert (heat.max(axis=2) == 0).mean() > 0.5
