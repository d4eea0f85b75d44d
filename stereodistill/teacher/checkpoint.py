"""The finished teacher on disk: ``teacher.pt`` (written by training and by the OpenPCDet import) and its loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stereodistill.checkpoints import load_model_checkpoint, model_checkpoint
from stereodistill.head.anchors import AnchorGrid
from stereodistill.settings import load_settings
from stereodistill.teacher.model import SecondTeacher
from stereodistill.teacher.settings import TeacherConfig

MODEL_KIND = "teacher"


def teacher_model_checkpoint(
    model: SecondTeacher, epoch: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What ``teacher.pt`` holds (:func:`~stereodistill.checkpoints.model_checkpoint`)."""
    return model_checkpoint(MODEL_KIND, model, epoch, extra)


def load_teacher(
    path: str | Path, device: torch.device | str = "cpu", grid: AnchorGrid | None = None
) -> SecondTeacher:
    """The finished teacher at ``path`` on ``device`` in eval mode; checked against ``grid`` when given."""
    ckpt, stored = load_model_checkpoint(path, MODEL_KIND, grid)
    model = SecondTeacher(load_settings(TeacherConfig, ckpt["config"], "config", path), stored)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()
