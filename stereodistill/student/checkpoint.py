"""The finished student on disk: ``student.pt`` (written by training) and its loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stereodistill.checkpoints import load_model_checkpoint, model_checkpoint
from stereodistill.head.anchors import AnchorGrid
from stereodistill.settings import load_settings
from stereodistill.student.model import StereoStudent
from stereodistill.student.settings import StudentConfig

MODEL_KIND = "student"


def student_model_checkpoint(
    model: StereoStudent, epoch: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What ``student.pt`` holds (:func:`~stereodistill.checkpoints.model_checkpoint`), with the network's
    ``imitation_channels`` (0 without the feature-imitation adapter)."""
    return model_checkpoint(
        MODEL_KIND, model, epoch, {"imitation_channels": model.imitation_channels, **(extra or {})}
    )


def load_student(
    path: str | Path, device: torch.device | str = "cpu", grid: AnchorGrid | None = None
) -> tuple[StereoStudent, dict[str, Any]]:
    """The finished student at ``path`` in eval mode and its checkpoint's extra fields (``settings`` ...)."""
    ckpt, stored = load_model_checkpoint(path, MODEL_KIND, grid)
    config = dict(ckpt["config"])
    # Checkpoints written before the field existed were trained with a plain-ReLU regression tower.
    config.setdefault("box_tower_negative_slope", 0.0)
    # Checkpoints written before the imitation adapter existed have none.
    imitation_channels = int(ckpt.get("imitation_channels", 0))
    model = StereoStudent(load_settings(StudentConfig, config, "config", path), stored, imitation_channels)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt
