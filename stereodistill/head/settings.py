"""Post-processing settings (``teacher.decode`` and ``student.decode`` in params.yaml); see :mod:`.decode`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecodeSettings:
    """Post-processing settings (defaults: SECOND's KITTI test configuration, params.yaml's values)."""

    score_threshold: float = 0.1
    pre_nms_top_k: int = 4096
    nms_iou_threshold: float = 0.01
    post_nms_top_k: int = 500
    class_agnostic: bool = True
