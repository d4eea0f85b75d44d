"""Scoring the teacher from params.yaml: what the `evaluate_teacher` stage and `stereodistill teacher evaluate` run."""

from __future__ import annotations

from pathlib import Path

from stereodistill.checkpoints import default_device
from stereodistill.evaluation.stage import evaluation_split, score_and_write
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import Params
from stereodistill.teacher.checkpoint import load_teacher
from stereodistill.teacher.predict import predict_to_kitti


def evaluate_teacher_from_params(params: Params, progress: bool = True) -> dict:
    """Detect on the evaluation split, write KITTI result files, the evaluator's JSON and the error breakdown;
    return the evaluator's JSON."""
    grid = AnchorGrid.from_params(params.grid, params.source)
    model = load_teacher(Path(params.teacher.out_dir) / "teacher.pt", default_device(), grid)
    split = evaluation_split(params)
    predict_to_kitti(model, split, params.teacher.decode, params.evaluate.teacher_predictions, progress)
    return score_and_write(
        params,
        split,
        params.evaluate.teacher_predictions,
        params.evaluate.teacher_metrics,
        params.evaluate.teacher_breakdown,
    )
