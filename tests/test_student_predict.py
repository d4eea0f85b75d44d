"""Student inference over a split: batching frames changes neither which frame gets which boxes nor their scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from student_fixtures import tiny_student

from stereodistill.data.prepared import PreparedSplit
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.settings import DecodeSettings
from stereodistill.params import load_params
from stereodistill.student.model import StereoStudent
from stereodistill.student.predict import predict_to_kitti

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
# Every anchor's score is kept (threshold 0), so an untrained network still yields ranked boxes to compare.
DECODE = DecodeSettings(score_threshold=0.0, pre_nms_top_k=200, nms_iou_threshold=0.5, post_nms_top_k=30)


def test_batched_prediction_matches_one_frame_at_a_time(synthetic_train_split, tmp_path):
    grid = AnchorGrid.from_params(load_params(PARAMS).grid, PARAMS)
    torch.manual_seed(0)
    model = StereoStudent(tiny_student(), grid)
    split = PreparedSplit(synthetic_train_split)
    assert len(split) == 4
    single = predict_to_kitti(
        model, split, DECODE, tmp_path / "one", image_scale=4, batch_size=1, progress=False
    )
    # Three frames a batch over four frames: one full batch and one of a single frame.
    batched = predict_to_kitti(
        model, split, DECODE, tmp_path / "three", image_scale=4, batch_size=3, progress=False
    )
    default = predict_to_kitti(model, split, DECODE, tmp_path / "default", image_scale=4, progress=False)
    assert list(single) == list(batched) == list(default) == split.frame_ids
    for frame_id, objects in single.items():
        assert objects, frame_id
        for other in (batched[frame_id], default[frame_id]):
            assert [o.type for o in other] == [o.type for o in objects], frame_id
            assert [o.score for o in other] == pytest.approx([o.score for o in objects], abs=1e-4)
            locations = [v for o in other for v in o.location]
            assert locations == pytest.approx([v for o in objects for v in o.location], abs=1e-3)
        assert (tmp_path / "three" / f"{frame_id}.txt").is_file()
