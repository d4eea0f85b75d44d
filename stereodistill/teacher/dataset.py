"""LiDAR frames of a prepared split for the teacher: points, ground-truth boxes and class names, augmented
for training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from stereodistill.data.prepared import PreparedSplit
from stereodistill.geometry.boxes import points_in_boxes
from stereodistill.geometry.views import mirror_boxes, mirror_points
from stereodistill.teacher.augment import GroundTruthSampler, ObjectSample, rotate_z, scale
from stereodistill.teacher.settings import AugmentSettings


@dataclass
class LidarFrame:
    """One teacher sample: ``points (N, F)`` project frame, ``boxes (G, 7)`` and their KITTI type ``names``."""

    frame_id: str
    points: np.ndarray
    boxes: np.ndarray
    names: list[str]


def build_object_database(
    split: PreparedSplit, classes: Sequence[str], min_points: int, features: int
) -> dict:
    """Every labelled object of ``classes`` in ``split`` with at least ``min_points`` LiDAR points inside."""
    database: dict[str, list[ObjectSample]] = {c: [] for c in classes}
    for i in range(len(split)):
        labels = split.labels(i)
        wanted = [j for j, t in enumerate(labels.types) if t in database]
        if not wanted:
            continue
        points = split.read_points(i)[:, :features]
        boxes = labels.boxes[wanted].astype(np.float64)
        inside = points_in_boxes(points[:, :3], boxes)
        for k, j in enumerate(wanted):
            if inside[k].sum() >= min_points:
                database[str(labels.types[j])].append(
                    ObjectSample(labels.boxes[j].copy(), str(labels.types[j]), points[inside[k]].copy())
                )
    return database


class TeacherFrames(Dataset):
    """Frames of ``split`` as :class:`LidarFrame`; augmented when ``augment`` is given.

    Randomness comes from ``seed``, the epoch (:meth:`set_epoch`) and the frame index only, so a resumed run
    sees exactly the samples an uninterrupted one would have.
    """

    def __init__(
        self,
        split: PreparedSplit,
        point_features: int,
        augment: AugmentSettings | None = None,
        sampler: GroundTruthSampler | None = None,
        seed: int = 0,
    ) -> None:
        self.split = split
        self.point_features = point_features
        self.augment = augment
        self.sampler = sampler
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> LidarFrame:
        labels = self.split.labels(index)
        keep = [j for j, t in enumerate(labels.types) if t != "DontCare"]
        points = self.split.read_points(index)[:, : self.point_features].astype(np.float32)
        boxes = labels.boxes[keep].astype(np.float32)
        names = [str(labels.types[j]) for j in keep]
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if self.sampler is not None:
                points, boxes, names = self.sampler(points, boxes, names, rng)
            if rng.random() < self.augment.flip_probability:
                points, boxes = mirror_points(points), mirror_boxes(boxes)
            points, boxes = rotate_z(points, boxes, float(rng.uniform(*self.augment.rotation)))
            points, boxes = scale(points, boxes, float(rng.uniform(*self.augment.scale)))
            points = points[rng.permutation(len(points))]
        return LidarFrame(self.split.frame_ids[index], points, boxes.reshape(-1, 7), names)


def collate_frames(frames: list[LidarFrame]) -> list[LidarFrame]:
    return frames


def frame_points(frames: Sequence[LidarFrame], device: torch.device) -> list[torch.Tensor]:
    return [torch.from_numpy(f.points).to(device) for f in frames]
