"""The teacher's pipeline steps driven by params.yaml: shared by `stages/` and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stereodistill.checkpoints import default_device
from stereodistill.evaluation.stage import evaluation_split, score_and_write
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.decode import DecodeSettings
from stereodistill.params import require, section
from stereodistill.teacher.checkpoint import load_teacher
from stereodistill.teacher.model import TeacherConfig
from stereodistill.teacher.predict import predict_to_kitti
from stereodistill.teacher.train import TeacherTrainSettings, train_teacher


def train_teacher_from_params(
    params: dict[str, Any], resume: bool = False, restart_on_mismatch: bool = False, progress: bool = True
) -> Path:
    """Train the teacher on ``{data.prepared_dir}/train.h5`` into ``teacher.out_dir`` (see :func:`train_teacher`)."""
    data, teacher = section(params, "data"), section(params, "teacher")
    grid = AnchorGrid.from_params(section(params, "grid"), "params.yaml")
    return train_teacher(
        grid,
        TeacherConfig.from_params(require(teacher, "model", "teacher")),
        TeacherTrainSettings.from_params(require(teacher, "train", "teacher")),
        Path(require(data, "prepared_dir", "data")) / "train.h5",
        require(teacher, "out_dir", "teacher"),
        resume=resume,
        restart_on_mismatch=restart_on_mismatch,
        device=default_device(),
        progress=progress,
    )


def decode_settings(teacher: dict[str, Any]) -> DecodeSettings:
    return DecodeSettings(**require(teacher, "decode", "teacher"))


def evaluate_teacher_from_params(params: dict[str, Any], progress: bool = True) -> dict:
    """Detect on the evaluation split, write KITTI result files and the evaluator's JSON; return the JSON."""
    teacher, evaluate = section(params, "teacher"), section(params, "evaluate")
    grid = AnchorGrid.from_params(section(params, "grid"), "params.yaml")
    model = load_teacher(Path(require(teacher, "out_dir", "teacher")) / "teacher.pt", default_device(), grid)
    split = evaluation_split(params)
    detections = predict_to_kitti(
        model, split, decode_settings(teacher), require(evaluate, "teacher_predictions", "evaluate"), progress
    )
    return score_and_write(params, split, detections, "teacher_metrics")
