"""The teacher's pipeline steps driven by params.yaml: shared by `stages/` and the CLI."""

from __future__ import annotations

from pathlib import Path

from stereodistill.checkpoints import default_device
from stereodistill.evaluation.stage import evaluation_split, score_and_write
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import Params
from stereodistill.teacher.predict import predict_to_kitti
from stereodistill.teacher.train import load_teacher, train_teacher


def train_teacher_from_params(
    params: Params, resume: bool = False, restart_on_mismatch: bool = False, progress: bool = True
) -> Path:
    """Train the teacher on ``{data.prepared_dir}/train.h5`` into ``teacher.out_dir`` (see :func:`train_teacher`)."""
    teacher = params.teacher
    return train_teacher(
        AnchorGrid.from_params(params.grid, params.source),
        teacher.model,
        teacher.train,
        Path(params.data.prepared_dir) / "train.h5",
        teacher.out_dir,
        resume=resume,
        restart_on_mismatch=restart_on_mismatch,
        device=default_device(),
        progress=progress,
    )


def evaluate_teacher_from_params(params: Params, progress: bool = True) -> dict:
    """Detect on the evaluation split, write KITTI result files and the evaluator's JSON; return the JSON."""
    grid = AnchorGrid.from_params(params.grid, params.source)
    model = load_teacher(Path(params.teacher.out_dir) / "teacher.pt", default_device(), grid)
    split = evaluation_split(params)
    detections = predict_to_kitti(
        model, split, params.teacher.decode, params.evaluate.teacher_predictions, progress
    )
    return score_and_write(params, split, detections, params.evaluate.teacher_metrics)
