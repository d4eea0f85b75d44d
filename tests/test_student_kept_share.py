"""XGD's kept share over a cached split (stereodistill/student/kept_share.py), with a hand-made teacher cache.

The cache answers every anchor with the matched GT box of the student's assigner (a perfect teacher), and moves
the Car boxes sideways by 0.4 m: the Car's centre pilot then has IoU (1.6 - 0.4) / (1.6 + 0.4) = 0.6 < 0.7, as has
the whole box, while its size and heading pilots equal the GT.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from kitti_fixtures import KittiFixture

from stereodistill.cache.reader import CachedFrame, TeacherCache
from stereodistill.data.prepared import PreparedSplit, prepare_split
from stereodistill.distill.settings import XgdSettings
from stereodistill.errors import InputError
from stereodistill.geometry.views import IDENTITY, view_ground_truth
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import TargetAssigner, ground_truth_from_labels
from stereodistill.params import read_params_yaml
from stereodistill.student.kept_share import KeptCounts, format_kept_shares, xgd_kept_counts

REPO = Path(__file__).resolve().parents[1]
SIDEWAYS = 0.4  # metres, across the Car's heading


class AssignedTeacherCache(TeacherCache):
    """A cache whose boxes are the assigner's matched GT (Car boxes moved sideways); ``drop`` leaves anchors out."""

    def __init__(self, split: PreparedSplit, grid: AnchorGrid, drop: int = 0) -> None:
        super().__init__("hand-made-cache")
        self.split, self.assigner, self.drop = split, TargetAssigner(grid), drop

    def read(self, frame: int | str, view: str = IDENTITY) -> CachedFrame:
        index = self.split.frame_ids.index(frame)
        boxes, names = view_ground_truth(self.split.labels(index), view)
        gt = ground_truth_from_labels(names, torch.from_numpy(boxes.astype(np.float32)), self.assigner.grid)
        targets = self.assigner.assign_frame(gt)
        covered = torch.nonzero(targets.positive, as_tuple=True)[0][self.drop :]
        teacher = gt.boxes[targets.matched_gt[covered]].clone()
        car = targets.labels[covered] == 0
        heading = teacher[car, 6]
        teacher[car, 0] -= SIDEWAYS * torch.sin(heading)
        teacher[car, 1] += SIDEWAYS * torch.cos(heading)
        num_anchors = targets.labels.shape[0]
        return CachedFrame(
            frame_id=str(frame),
            view=view,
            cls_logits=torch.zeros(num_anchors, 3),
            covered_index=covered,
            boxes=teacher,
            dir_logits=torch.zeros(covered.shape[0], 2),
            covered_kind=torch.zeros(covered.shape[0], dtype=torch.uint8),
            score_floor_reached=0.1,
        )


@pytest.fixture(scope="module")
def split_and_grid(kitti_readonly: KittiFixture, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("kept") / "train.h5"
    prepare_split(kitti_readonly.root, kitti_readonly.split_file("train"), path, progress=False)
    grid = AnchorGrid.from_params(read_params_yaml((REPO / "params.yaml").read_text())["grid"])
    return PreparedSplit(path), grid


def test_a_sideways_teacher_loses_the_centre_and_the_whole_box_but_keeps_size_and_heading(split_and_grid):
    split, grid = split_and_grid
    counts = xgd_kept_counts(split, AssignedTeacherCache(split, grid), grid, XgdSettings())
    shares = counts.shares()
    assert counts.components == ("centre", "size", "heading")
    car = shares["Car"]
    assert car["positives"] > 0
    assert car["xgd"] == {"centre": 0.0, "size": 1.0, "heading": 1.0}
    assert car["xgd_every_component"] == 0.0 and car["whole_box"] == 0.0
    for name in ("Pedestrian", "Cyclist"):  # frame 000000's Pedestrian, 000001's Cyclist: answered exactly
        assert shares[name]["positives"] > 0
        assert shares[name]["xgd"] == {"centre": 1.0, "size": 1.0, "heading": 1.0}
        assert shares[name]["whole_box"] == 1.0
    total = shares["all"]
    exact = shares["Pedestrian"]["positives"] + shares["Cyclist"]["positives"]
    assert total["positives"] == car["positives"] + exact
    assert total["whole_box"] == pytest.approx(exact / total["positives"])
    assert "whole-box" in format_kept_shares(counts)


def test_a_class_without_positives_has_no_share():
    empty = KeptCounts(
        ("Car",), ("centre",), np.zeros(1, int), np.zeros((1, 1), int), np.zeros(1, int), np.zeros(1, int)
    )
    assert empty.shares()["Car"] == {
        "positives": 0,
        "xgd": {"centre": None},
        "xgd_every_component": None,
        "whole_box": None,
    }


def test_a_bev_pilot_with_a_lower_threshold_keeps_the_car_centre(split_and_grid):
    split, grid = split_and_grid
    lenient = XgdSettings(iou="bev", thresholds=(0.55, 0.5, 0.5))  # BEV IoU of the moved Car box: 0.6
    shares = xgd_kept_counts(split, AssignedTeacherCache(split, grid), grid, lenient).shares()
    assert shares["Car"]["xgd"]["centre"] == 1.0 and shares["Car"]["whole_box"] == 1.0
    assert math.isclose(shares["all"]["xgd_every_component"], 1.0)


def test_a_positive_without_a_cached_box_is_an_error(split_and_grid):
    split, grid = split_and_grid
    with pytest.raises(InputError, match="have no cached teacher box"):
        xgd_kept_counts(split, AssignedTeacherCache(split, grid, drop=1), grid, XgdSettings())
