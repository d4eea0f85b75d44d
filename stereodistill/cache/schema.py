"""The teacher cache's layout: array names, shapes, fill values, the ``cache`` settings and the identity attributes.

One Zarr v3 group (see docs/CACHE_FORMAT.md). ``F`` frames, ``V`` views, ``N`` anchors, ``C`` classes, ``K``
covered-anchor capacity per frame and view, ``S`` frames per shard::

    frame_id            (F,)          str      the prepared split's frame ids, in order
    cls_logits          (F, V, N, C)  int16    quantised class logits of every anchor (grid anchor order)
    covered_count       (F, V)        int32    how many covered anchors the frame/view has (<= K)
    covered_index       (F, V, K)     int32    covered anchor indices, ascending, padded with -1
    covered_kind        (F, V, K)     uint8    why each is covered: bit 1 IoU floor, 2 best anchor of a GT, 4 score
    boxes               (F, V, K, 7)  float32  decoded teacher box (x, y, z, l, w, h, heading) of each covered anchor
    dir_logits          (F, V, K, 2)  int16    quantised direction logits of each covered anchor
    score_floor_reached (F, V)        float32  every anchor whose max sigmoid score is >= this is covered
    shard_complete      (F / S,)      uint8    1 once every array of the shard has been written

With ``cache.features: [bev]`` (``Kf`` feature capacity, ``Cb`` the teacher's BEV channels) the store also holds the
teacher's BEV features at the frame's in-box cells (cell centre inside a GT box of the view, LIGA's imitation
region; cell ``iy * nx + ix``)::

    feature_count       (F, V)        int32    how many in-box cells the frame/view has (<= Kf)
    feature_cell        (F, V, Kf)    int32    their BEV cell indices, ascending, padded with -1
    bev_features        (F, V, Kf, Cb) float16 the teacher's BEV feature map at each cell, padded with 0
    bev_feature_abs_sum (F, V, Cb)    float32  per channel, the sum of |feature| over the frame/view's cells

Per-frame arrays are sharded ``(S, V, ...)`` with one inner chunk per frame and view, so each shard is one file
that exactly one writer fills in one call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stereodistill.errors import InputError
from stereodistill.geometry.views import HFLIP, IDENTITY, KNOWN_VIEWS
from stereodistill.settings import fail

SCHEMA_VERSION = 2  # 2: optional teacher feature arrays (cache.features)

# Bits of covered_kind.
KIND_IOU = 1  # nearest-axis BEV IoU with a GT box of the anchor's class >= iou_floor
KIND_BEST = 2  # a best anchor of some GT box (the assigner's force match)
KIND_SCORE = 4  # teacher max sigmoid score >= score_floor

LOGIT_DTYPE = "int16"
LOGIT_FILL = -32768  # never produced by quantisation (clipped to +-32767), so it means "not written"
LOGIT_MAX_CODE = 32767
INDEX_FILL = -1
BOX_DTYPE = "float32"

PER_FRAME_ARRAYS = ("cls_logits", "covered_index", "covered_kind", "boxes", "dir_logits")
PER_SHARD_ARRAYS = ("covered_count", "score_floor_reached")
FEATURE_MAPS = ("bev",)  # teacher feature maps the cache can hold (cache.features)
FEATURE_DTYPE = "float16"
FEATURE_PER_FRAME_ARRAYS = ("feature_cell", "bev_features")
FEATURE_PER_SHARD_ARRAYS = ("feature_count", "bev_feature_abs_sum")
CODECS = ("blosc-zstd-bitshuffle", "zstd", "none")


@dataclass(frozen=True)
class CoverageSettings:
    """``cache.coverage``: which anchors get their box and direction logits cached."""

    iou_floor: float = 0.3  # nearest-axis BEV IoU with a GT of the anchor's class
    score_floor: float = 0.1  # teacher max sigmoid score
    capacity: int = 4096  # covered anchors per frame and view (padded)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            fail("capacity", f"expected a positive integer, got {self.capacity!r}")
        if not 0.0 < self.iou_floor <= 1.0:
            fail("iou_floor", f"expected a value in (0, 1], got {self.iou_floor}")
        if not 0.0 < self.score_floor <= 1.0:
            fail("score_floor", f"expected a value in (0, 1], got {self.score_floor}")


@dataclass(frozen=True)
class CacheSettings:
    """The ``cache`` section of params.yaml (see params.yaml for the meaning of each field)."""

    store: str = "data/teacher_cache.zarr"
    split: str = "train"
    views: tuple[str, ...] = (IDENTITY, HFLIP)
    batch_size: int = 4
    frames_per_shard: int = 32
    logit_step: float = 0.015625
    codec: str = "blosc-zstd-bitshuffle"
    codec_level: int = 3
    coverage: CoverageSettings = CoverageSettings()
    features: tuple[str, ...] = FEATURE_MAPS
    feature_capacity: int = 2048

    def __post_init__(self) -> None:
        bad = [name for name in self.features if name not in FEATURE_MAPS]
        if bad or len(set(self.features)) != len(self.features):
            fail(
                "features",
                f"expected distinct names from {list(FEATURE_MAPS)} (or []), got {list(self.features)}",
            )
        if self.feature_capacity < 1:
            fail("feature_capacity", f"expected a positive integer, got {self.feature_capacity!r}")
        if not self.views or len(set(self.views)) != len(self.views):
            fail("views", f"expected distinct views, got {list(self.views)}")
        for view in self.views:
            if view not in KNOWN_VIEWS:
                fail("views", f"unknown view {view!r} (known: {', '.join(KNOWN_VIEWS)})")
        for name in ("batch_size", "frames_per_shard"):
            value = getattr(self, name)
            if value < 1:
                fail(name, f"expected a positive integer, got {value!r}")
        if not 0.0 < self.logit_step <= 0.02:
            fail("logit_step", f"expected a step in (0, 0.02] (0.01 logit precision), got {self.logit_step}")
        if self.codec not in CODECS:
            fail("codec", f"expected one of {', '.join(CODECS)}, got {self.codec!r}")

    def store_layout(self) -> dict[str, Any]:
        """What the stored bytes depend on besides teacher and data (part of the identity attributes)."""
        return {
            "views": list(self.views),
            "frames_per_shard": self.frames_per_shard,
            "quantisation": {
                "logits": {"dtype": LOGIT_DTYPE, "step": self.logit_step, "fill": LOGIT_FILL},
                "boxes": {"dtype": BOX_DTYPE},
            },
            "coverage": {
                "iou_floor": self.coverage.iou_floor,
                "score_floor": self.coverage.score_floor,
                "capacity": self.coverage.capacity,
            },
            "codec": {"name": self.codec, "level": self.codec_level},
            "features": {
                "maps": list(self.features),
                "dtype": FEATURE_DTYPE,
                "capacity": self.feature_capacity,
            },
            # Frames are grouped into forward batches of this size within a shard; kept so a resumed run
            # batches exactly as the first did (float results may depend on the batch).
            "batch_size": self.batch_size,
        }


def num_shards(num_frames: int, frames_per_shard: int) -> int:
    return math.ceil(num_frames / frames_per_shard)


def shard_frames(shard: int, num_frames: int, frames_per_shard: int) -> range:
    return range(shard * frames_per_shard, min((shard + 1) * frames_per_shard, num_frames))


def check_views_supported(
    views: Sequence[str], point_cloud_range: Sequence[float], where: str | Path | None
) -> None:
    """The hflip view needs a grid symmetric in y, so mirrored anchors land on anchors."""
    if HFLIP in views:
        y_min, y_max = point_cloud_range[1], point_cloud_range[4]
        if abs(y_min + y_max) > 1e-6:
            raise InputError(
                f"cache.views includes hflip but grid.point_cloud_range is not symmetric in y "
                f"({y_min} .. {y_max}): mirrored anchors would not coincide with anchors",
                where,
            )


def empty_block(
    frames: int,
    views: int,
    anchors: int,
    classes: int,
    capacity: int,
    feature_capacity: int = 0,
    bev_channels: int = 0,
) -> dict[str, np.ndarray]:
    """Host buffers for ``frames`` frames, filled with each array's fill value (the feature arrays only when
    ``bev_channels > 0``)."""
    features = {}
    if bev_channels:
        features = {
            "feature_cell": np.full((frames, views, feature_capacity), INDEX_FILL, np.int32),
            "bev_features": np.zeros((frames, views, feature_capacity, bev_channels), np.float16),
            "feature_count": np.full((frames, views), -1, np.int32),
            "bev_feature_abs_sum": np.full((frames, views, bev_channels), np.nan, np.float32),
        }
    return features | {
        "cls_logits": np.full((frames, views, anchors, classes), LOGIT_FILL, np.int16),
        "covered_index": np.full((frames, views, capacity), INDEX_FILL, np.int32),
        "covered_kind": np.zeros((frames, views, capacity), np.uint8),
        "boxes": np.full((frames, views, capacity, 7), np.nan, np.float32),
        "dir_logits": np.full((frames, views, capacity, 2), LOGIT_FILL, np.int16),
        "covered_count": np.full((frames, views), -1, np.int32),
        "score_floor_reached": np.full((frames, views), np.nan, np.float32),
    }
