"""The tiny stereo student the tests build and train (seconds on a CPU), defined once.

``TINY_STUDENT_MODEL``, ``TINY_STUDENT_TRAIN`` and ``NO_PRETRAINING`` are params sections (``student.model`` /
``student.train`` / ``student.pretrain``, lists as in params.yaml) for tests that write a params file; :func:`tiny_student` is the same model as a
``StudentConfig``. A test that needs other values overrides only those.
"""

from __future__ import annotations

from typing import Any

from stereodistill.settings import load_settings
from stereodistill.student.settings import StudentConfig

TINY_STUDENT_MODEL: dict[str, Any] = {
    "backbone_channels": [4, 4, 8],
    "backbone_strides": [1, 2, 1],
    "backbone_blocks": [1, 1, 1],
    "stereo_channels": 8,
    "semantic_channels": 4,
    "gwc_groups": 2,
    "num_planes": 8,
    "cost_channels": 4,
    "voxel_z": 4,
    "z_pool": 2,
    "volume_channels": 4,
    "bev_channels": 8,
    "norm_groups": 4,
}

# One short epoch on quarter-size images.
TINY_STUDENT_TRAIN: dict[str, Any] = {"epochs": 1, "batch_size": 2, "image_scale": 4}

# The trunk trains from scratch: a test that does not test pretraining needs no trunk.pt.
NO_PRETRAINING: dict[str, Any] = {"epochs": 0}


def tiny_student(**overrides: Any) -> StudentConfig:
    """The tiny student with ``overrides`` (``StudentConfig`` fields; tuples or lists)."""
    return load_settings(StudentConfig, {**TINY_STUDENT_MODEL, **overrides}, "student.model")
