"""LiDAR training augmentations in the project frame (SECOND's): global rotation and scaling, and ground-truth
sampling. Each takes and returns ``points (N, F)`` and ``boxes (G, 7)`` numpy arrays. The flip is the ``hflip``
view's mirroring (:mod:`stereodistill.geometry.views`).

Rotations are about the frame's origin (rectified camera 0) and its vertical axis, so the ground plane stays
where it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stereodistill.geometry.angles import wrap_angle
from stereodistill.geometry.boxes import points_in_boxes


def rotate_z(points: np.ndarray, boxes: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the scene by ``angle`` (radians, counter-clockwise) about the z axis."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]], dtype=points.dtype)
    points, boxes = points.copy(), boxes.copy()
    points[:, :2] = points[:, :2] @ rot.T
    boxes[:, :2] = boxes[:, :2] @ rot.T.astype(boxes.dtype)
    boxes[:, 6] = wrap_angle(boxes[:, 6] + angle)
    return points, boxes


def scale(points: np.ndarray, boxes: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale positions and sizes by ``factor`` about the origin."""
    points, boxes = points.copy(), boxes.copy()
    points[:, :3] *= factor
    boxes[:, :6] *= factor
    return points, boxes


@dataclass
class ObjectSample:
    """One object cut out of a training frame: its box ``(7,)``, class name and the points inside ``(P, F)``."""

    box: np.ndarray
    name: str
    points: np.ndarray


@dataclass
class GroundTruthSampler:
    """SECOND's ground-truth sampling: paste objects from other training frames into a scene.

    ``database`` maps a class name to its samples; ``per_class`` how many of each class to try to add. A
    sample is pasted only where its BEV footprint (enlarged by ``margin`` metres) overlaps no existing box;
    points of the scene inside the pasted box are removed first.
    """

    database: dict[str, list[ObjectSample]]
    per_class: dict[str, int]
    margin: float = 0.3

    def __call__(
        self, points: np.ndarray, boxes: np.ndarray, names: Sequence[str], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        out_boxes = [b for b in boxes]
        out_names = list(names)
        pasted: list[ObjectSample] = []
        for cls, count in self.per_class.items():
            pool = self.database.get(cls, [])
            if not pool or count <= 0:
                continue
            for i in rng.choice(len(pool), size=min(count, len(pool)), replace=False):
                sample = pool[int(i)]
                if _overlaps_any(sample.box, out_boxes, self.margin):
                    continue
                out_boxes.append(sample.box)
                out_names.append(sample.name)
                pasted.append(sample)
        if not pasted:
            return points, boxes, list(names)
        new_boxes = np.stack([s.box for s in pasted])
        keep = ~points_in_boxes(points[:, :3], new_boxes).any(axis=0)
        points = np.concatenate([points[keep], *[s.points for s in pasted]], axis=0)
        return points, np.stack(out_boxes).astype(boxes.dtype), out_names


def _overlaps_any(box: np.ndarray, boxes: list[np.ndarray], margin: float) -> bool:
    """Conservative BEV test: bounding circles (radius = half diagonal + margin) intersect."""
    if not boxes:
        return False
    others = np.stack(boxes)
    radius = np.hypot(box[3], box[4]) / 2 + margin
    radii = np.hypot(others[:, 3], others[:, 4]) / 2
    distance = np.hypot(others[:, 0] - box[0], others[:, 1] - box[1])
    return bool(np.any(distance < radius + radii))
