"""The teacher cache as the student's training opens it: checked to serve the views, boxes, classes and feature
maps it needs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stereodistill.cache.reader import TeacherCache
from stereodistill.data.prepared import PreparedSplit, split_fingerprint
from stereodistill.errors import InputError
from stereodistill.geometry.views import HFLIP, IDENTITY
from stereodistill.head.anchors import AnchorGrid

if TYPE_CHECKING:
    from stereodistill.distill.settings import DistillSettings
    from stereodistill.student.settings import StudentTrainSettings


def views_needed(settings: StudentTrainSettings) -> list[str]:
    """The cache views the student reads: ``identity``, and ``hflip`` when it flips stereo pairs."""
    return [IDENTITY] + ([HFLIP] if settings.flip_probability > 0 else [])


def open_cache(
    path: str | Path,
    grid: AnchorGrid,
    settings: StudentTrainSettings,
    distill: DistillSettings,
    split: PreparedSplit,
    split_digest: str | None = None,
) -> TeacherCache:
    """Open the teacher cache and check it serves this run; errors name the param that asks for more.

    ``split_digest`` is ``split_fingerprint(split)`` when the caller already has it (it reads every frame).
    """
    cache = TeacherCache(path)
    held = cache.views
    missing = [v for v in views_needed(settings) if v not in held]
    if missing:
        raise InputError(
            f"student.train.flip_probability is {settings.flip_probability}: the student needs cache views "
            f"{missing}, the cache holds {held} (add them to cache.views and rerun cache-teacher, or set "
            "student.train.flip_probability: 0)",
            cache.path,
        )
    if distill.imitation.enabled and "bev" not in cache.feature_maps:
        raise InputError(
            f"distill.imitation.mode is {distill.imitation.mode!r}: the student imitates the teacher's BEV "
            f"features, but the cache holds feature maps {list(cache.feature_maps)} (add bev to cache.features "
            "and rerun cache-teacher, or set distill.imitation.mode: off)",
            cache.path,
        )
    iou_needed = min(c.matched_iou for c in grid.classes)
    floor = float(cache.identity["coverage"]["iou_floor"])
    if distill.xgd.enabled and iou_needed < floor - 1e-9:
        raise InputError(
            f"grid.classes[*].matched_iou: the assigner's positives start at IoU {iou_needed}, but the cache holds "
            f"boxes only down to cache.coverage.iou_floor {floor} (needed by distill.xgd.mode "
            f"{distill.xgd.mode!r}); rebuild the cache with a lower iou_floor",
            cache.path,
        )
    if distill.xgd.enabled and distill.xgd.num_classes() != grid.num_classes:
        raise InputError(
            f"distill.xgd.thresholds: need one threshold per grid class ({grid.num_classes}), "
            f"got {distill.xgd.num_classes()}",
            "params.yaml",
        )
    cache.validate(
        grid,
        views_needed(settings),
        iou_floor_needed=iou_needed if distill.xgd.enabled else 1.0,
        split_fingerprint=split_digest or split_fingerprint(split),
        frame_ids=split.frame_ids,
    )
    return cache
