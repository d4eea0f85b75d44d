"""Training the teacher from params.yaml: what the `train_teacher` stage and `stereodistill train-teacher` run."""

from __future__ import annotations

from pathlib import Path

from stereodistill.checkpoints import default_device
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import Params
from stereodistill.teacher.train import train_teacher


def train_teacher_from_params(
    params: Params, resume: bool = False, restart_on_mismatch: bool = False, progress: bool = True
) -> Path:
    """Train the teacher on ``{data.prepared_dir}/train.h5`` into ``teacher.out_dir`` (see :func:`train_teacher`)."""
    teacher = params.teacher
    return train_teacher(
        AnchorGrid.from_params(params.grid, params.source),
        teacher.model,
        teacher.train,
        params.data.prepared_split("train"),
        teacher.out_dir,
        resume=resume,
        restart_on_mismatch=restart_on_mismatch,
        device=default_device(),
        progress=progress,
    )
