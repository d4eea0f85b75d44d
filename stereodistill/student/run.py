"""The student's pipeline steps driven by params.yaml: shared by `stages/` and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stereodistill.cache.reader import TeacherCache
from stereodistill.cache.store import file_sha256
from stereodistill.checkpoints import default_device
from stereodistill.errors import InputError
from stereodistill.evaluation.stage import evaluation_split, score_and_write
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.decode import DecodeSettings
from stereodistill.params import require, section
from stereodistill.student.checkpoint import load_student
from stereodistill.student.config import StudentConfig
from stereodistill.student.predict import predict_to_kitti
from stereodistill.student.train import DistillSettings, StudentTrainSettings, train_student


def check_cache_teacher(cache_path: str | Path, teacher: Any) -> None:
    """Refuse a cache written by another teacher than ``{teacher.out_dir}/teacher.pt``, when that file exists.

    (A cache used without its teacher at hand is not checked: the student needs only the cache.)
    """
    out_dir = teacher.get("out_dir") if isinstance(teacher, dict) else None
    checkpoint = None if out_dir is None else Path(out_dir) / "teacher.pt"
    if checkpoint is None or not checkpoint.is_file():
        return
    cache = TeacherCache(cache_path)
    written_by = str(cache.identity.get("teacher", {}).get("sha256", ""))
    current = file_sha256(checkpoint)
    if written_by != current:
        raise InputError(
            f"teacher: this cache was written by teacher sha256 {written_by[:16]}..., but teacher.out_dir holds "
            f"{checkpoint} (sha256 {current[:16]}...); rerun `stereodistill cache-teacher`",
            cache.path,
        )


def train_student_from_params(
    params: dict[str, Any], resume: bool = False, restart_on_mismatch: bool = False, progress: bool = True
) -> Path:
    """Train the student on ``{data.prepared_dir}/train.h5`` into ``student.out_dir`` (see ``train_student``).

    The teacher cache ``cache.store`` is opened only when ``distill`` turns XGD or CLD on.
    """
    data, student = section(params, "data"), section(params, "student")
    grid = AnchorGrid.from_params(section(params, "grid"), "params.yaml")
    distill = DistillSettings.from_params(params.get("distill"))
    cache_path = None
    if distill.enabled:
        cache_path = require(section(params, "cache"), "store", "cache")
        check_cache_teacher(cache_path, params.get("teacher"))
    return train_student(
        grid,
        StudentConfig.from_params(require(student, "model", "student")),
        StudentTrainSettings.from_params(require(student, "train", "student")),
        distill,
        Path(require(data, "prepared_dir", "data")) / "train.h5",
        require(student, "out_dir", "student"),
        cache_path=cache_path,
        resume=resume,
        restart_on_mismatch=restart_on_mismatch,
        device=default_device(),
        progress=progress,
    )


def evaluate_student_from_params(params: dict[str, Any], progress: bool = True) -> dict:
    """Detect on the evaluation split, write KITTI result files and the evaluator's JSON; return the JSON."""
    student, evaluate = section(params, "student"), section(params, "evaluate")
    grid = AnchorGrid.from_params(section(params, "grid"), "params.yaml")
    model, ckpt = load_student(
        Path(require(student, "out_dir", "student")) / "student.pt", default_device(), grid
    )
    image_scale = int(ckpt.get("settings", {}).get("image_scale", 1))
    split = evaluation_split(params)
    detections = predict_to_kitti(
        model,
        split,
        DecodeSettings(**require(student, "decode", "student")),
        require(evaluate, "student_predictions", "evaluate"),
        image_scale=image_scale,
        progress=progress,
    )
    return score_and_write(params, split, detections, "student_metrics")
