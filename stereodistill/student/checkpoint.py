"""The finished student on disk: ``student.pt`` (written by training) and its loader."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from stereodistill.checkpoints import load_checkpoint
from stereodistill.head.anchors import AnchorGrid
from stereodistill.settings import load_settings, to_dict
from stereodistill.student.model import StereoStudent
from stereodistill.student.settings import StudentConfig

MODEL_KIND = "student"


def student_model_checkpoint(
    model: StereoStudent, epoch: int, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What ``student.pt`` holds: kind, weights, grid, network config, epoch, then ``extra`` (``settings`` ...)."""
    return {
        "kind": MODEL_KIND,
        "model": model.state_dict(),
        "grid": model.grid.to_dict(),
        "config": to_dict(model.config),
        "epoch": epoch,
        **(extra or {}),
    }


def load_student(
    path: str | Path, device: torch.device | str = "cpu", grid: AnchorGrid | None = None
) -> tuple[StereoStudent, dict[str, Any]]:
    """The finished student at ``path`` in eval mode and its checkpoint's extra fields (``settings`` ...)."""
    ckpt = load_checkpoint(path, MODEL_KIND)
    stored = AnchorGrid.from_dict(ckpt["grid"])
    if grid is not None:
        grid.check_compatible(stored, what=str(path))
    config = dict(ckpt["config"])
    # Checkpoints written before the field existed were trained with a plain-ReLU regression tower.
    config.setdefault("box_tower_negative_slope", 0.0)
    model = StereoStudent(load_settings(StudentConfig, config, "config", path), stored)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt
