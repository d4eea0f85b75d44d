"""Label objects of many frames flattened into arrays, frame-major (frame by frame, file order within)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stereodistill.data.labels import KittiObject
from stereodistill.geometry.boxes import kitti_to_project_boxes


@dataclass(frozen=True)
class FlatObjects:
    """All objects of a list of frames; row ``i`` is one object.

    ``frame (N,)`` index into the frame list (non-decreasing), ``types (N,)`` str, ``bbox (N, 4)`` image box
    ``x1, y1, x2, y2``, ``alpha (N,)``, ``truncation (N,)``, ``occlusion (N,)`` int, ``boxes (N, 7)`` project
    boxes ``x, y, z_centre, l, w, h, heading``, ``score (N,)`` (NaN where a label has no score).
    """

    frame: np.ndarray
    types: np.ndarray
    bbox: np.ndarray
    alpha: np.ndarray
    truncation: np.ndarray
    occlusion: np.ndarray
    boxes: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    @classmethod
    def from_frames(
        cls, frames: Mapping[str, Sequence[KittiObject]], frame_ids: Sequence[str]
    ) -> FlatObjects:
        """Flatten ``frames[frame_id]`` for ``frame_ids`` in order; a frame missing from ``frames`` is empty."""
        objects: list[KittiObject] = []
        counts = np.zeros(len(frame_ids), dtype=np.int64)
        for i, frame_id in enumerate(frame_ids):
            frame_objects = frames.get(frame_id, ())
            counts[i] = len(frame_objects)
            objects.extend(frame_objects)
        frame = np.repeat(np.arange(len(frame_ids), dtype=np.int64), counts)
        # One row of numbers per object: truncated, occluded, alpha, bbox (4), h w l, x y z, rotation_y, score.
        numbers = np.array(
            [
                (o.truncated, o.occluded, o.alpha, *o.bbox, *o.dimensions, *o.location, o.rotation_y)
                + (np.nan if o.score is None else o.score,)
                for o in objects
            ],
            dtype=np.float64,
        ).reshape(-1, 15)
        return cls(
            frame=frame,
            types=np.array([o.type for o in objects], dtype="<U16"),
            bbox=numbers[:, 3:7],
            alpha=numbers[:, 2],
            truncation=numbers[:, 0],
            occlusion=numbers[:, 1].astype(np.int64),
            boxes=kitti_to_project_boxes(numbers[:, 10:13], numbers[:, 7:10], numbers[:, 13]),
            score=numbers[:, 14],
        )
