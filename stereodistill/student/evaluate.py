"""Scoring the student from params.yaml: what the `evaluate_student` stage and `stereodistill student evaluate` run."""

from __future__ import annotations

from pathlib import Path

from stereodistill.checkpoints import default_device
from stereodistill.evaluation.stage import evaluation_split, score_and_write
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import Params
from stereodistill.student.checkpoint import load_student
from stereodistill.student.model import StereoStudent
from stereodistill.student.predict import predict_to_kitti


def evaluate_student_from_params(params: Params, progress: bool = True) -> dict:
    """Detect on the evaluation split, write KITTI result files, the evaluator's JSON and the error breakdown;
    return the evaluator's JSON."""
    grid = AnchorGrid.from_params(params.grid, params.source)
    model, ckpt = load_student(Path(params.student.out_dir) / "student.pt", default_device(), grid)
    image_scale = int(ckpt.get("settings", {}).get("image_scale", 1))
    return evaluate_student_model(
        params,
        model,
        image_scale,
        params.evaluate.student_predictions,
        params.evaluate.student_metrics,
        progress,
        params.evaluate.student_breakdown,
    )


def evaluate_student_model(
    params: Params,
    model: StereoStudent,
    image_scale: int,
    predictions_dir: str | Path,
    metrics_path: str | Path,
    progress: bool = True,
    breakdown_path: str | Path | None = None,
) -> dict:
    """Score ``model`` (images downsampled by ``image_scale`` as in its training) on the evaluation split:
    KITTI result files under ``predictions_dir``, the evaluator's JSON at ``metrics_path`` and, when given, the
    error breakdown at ``breakdown_path``; return the evaluator's JSON."""
    split = evaluation_split(params)
    predict_to_kitti(
        model, split, params.student.decode, predictions_dir, image_scale=image_scale, progress=progress
    )
    return score_and_write(params, split, predictions_dir, metrics_path, breakdown_path)
