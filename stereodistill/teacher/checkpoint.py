"""The finished teacher on disk: ``teacher.pt`` (written by training and by the OpenPCDet import) and its loader."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from stereodistill.checkpoints import load_checkpoint
from stereodistill.head.anchors import AnchorGrid
from stereodistill.settings import load_settings, to_dict
from stereodistill.teacher.model import SecondTeacher
from stereodistill.teacher.settings import TeacherConfig

MODEL_KIND = "teacher"


def teacher_model_checkpoint(
    model: SecondTeacher, epoch: int, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What ``teacher.pt`` holds: kind, weights, grid, network config, epoch, then ``extra`` (``settings`` ...)."""
    return {
        "kind": MODEL_KIND,
        "model": model.state_dict(),
        "grid": model.grid.to_dict(),
        "config": to_dict(model.config),
        "epoch": epoch,
        **(extra or {}),
    }


def load_teacher(
    path: str | Path, device: torch.device | str = "cpu", grid: AnchorGrid | None = None
) -> SecondTeacher:
    """The finished teacher at ``path`` on ``device`` in eval mode; checked against ``grid`` when given."""
    ckpt = load_checkpoint(path, MODEL_KIND)
    stored = AnchorGrid.from_dict(ckpt["grid"])
    if grid is not None:
        grid.check_compatible(stored, what=str(path))
    model = SecondTeacher(load_settings(TeacherConfig, ckpt["config"], "config", path), stored)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()
