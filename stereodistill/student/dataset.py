"""Stereo frames of a prepared split for the student, each paired with the teacher's answer for the same scene.

One sample = the frame's left/right uint8 images, its calibration, project GT boxes with their KITTI names and
image_2 depth rows, all optionally (probability ``flip_probability``) put through LIGA's stereo flip
(:func:`stereodistill.student.flip.flip_stereo`). A sample is one view of its frame (``hflip`` when flipped,
``identity`` otherwise, see :mod:`stereodistill.geometry.views`): its GT is that view's ground truth and the
teacher's answer is read from that view of the cache, so both describe the scene the student sees (and so are the
teacher's BEV features when ``read_features`` asks for them, for the feature imitation). The coin of
sample ``i`` in epoch ``e`` depends only on ``(seed, e, i)``. Each sample also carries its GT's anchor targets,
assigned on the CPU here so that DataLoader workers assign while the training device runs the previous batch.

``image_scale = s`` (an integer) downsamples the images by averaging ``s x s`` blocks (the bottom/right
remainder of a size not divisible by ``s`` is cropped). Output pixel ``(i, j)`` covers input pixels
``s i .. s i + s - 1``, so an input column ``u`` becomes ``(u - (s - 1) / 2) / s``; the first two rows of ``P2``
and ``P3`` change the same way (``row' = (row - (s - 1) / 2 * row_3) / s``), and so do the depth rows' ``u, v``.
The baseline is unchanged (the camera centres do not move).

Batches (:func:`batch_inputs`): images of different sizes (KITTI's vary by a few pixels) are **zero-padded at the
bottom and right** to the batch's largest size; padding there leaves the calibration valid. The padded region
has no depth targets and lies outside every GT box's projection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from stereodistill.cache.reader import CachedFrame, TeacherCache
from stereodistill.data.prepared import PreparedSplit
from stereodistill.geometry.calibration import Calibration
from stereodistill.geometry.views import HFLIP, IDENTITY, view_ground_truth
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import (
    AssignedTargets,
    FrameGroundTruth,
    TargetAssigner,
    ground_truth_from_labels,
)
from stereodistill.student.flip import flip_stereo
from stereodistill.student.model import calibration_tensors, images_to_tensor
from stereodistill.student.ranks import epoch_indices

if TYPE_CHECKING:
    from stereodistill.cache.reader import CachedFeatures


@dataclass(frozen=True)
class StudentSample:
    """One training sample (after flip and scaling).

    ``left``, ``right`` ``(H, W, 3)`` uint8; ``calib`` for these images; ``boxes (G, 7)`` float32 project boxes
    with ``names (G,)`` KITTI types (every label line, DontCare included); ``depth (D, 3)`` float32 image_2 rows
    ``(u, v, depth)``; ``view`` the cache view of this scene; ``teacher`` the cached answer (None without cache);
    ``teacher_features`` the teacher's cached BEV features at the cells inside this view's GT boxes (None unless
    the dataset reads them); ``ground_truth`` the labels as the assigner's GT and ``targets`` its per-anchor targets ``(N, ..)``, both on
    the CPU (``targets.matched_gt`` indexes ``ground_truth.boxes``).
    """

    index: int
    frame_id: str
    view: str
    left: np.ndarray
    right: np.ndarray
    calib: Calibration
    boxes: np.ndarray
    names: list[str]
    depth: np.ndarray
    teacher: CachedFrame | None
    ground_truth: FrameGroundTruth
    targets: AssignedTargets
    teacher_features: CachedFeatures | None = None


def downscale_image(image: np.ndarray, scale: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(H // s, W // s, 3)`` uint8, the rounded mean of each ``s x s`` block."""
    if scale == 1:
        return image
    h, w = image.shape[0] // scale, image.shape[1] // scale
    blocks = image[: h * scale, : w * scale].reshape(h, scale, w, scale, -1).astype(np.float32)
    return np.ascontiguousarray(np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8))


def scale_calibration(calib: Calibration, scale: int) -> Calibration:
    """``P2`` and ``P3`` for images downsampled by ``scale`` (see the module docstring)."""
    if scale == 1:
        return calib

    def rows(P: np.ndarray) -> np.ndarray:
        out = np.array(P, dtype=np.float64, copy=True)
        out[:2] = (out[:2] - (scale - 1) / 2.0 * out[2:3]) / scale
        return out

    return dataclasses.replace(calib, P2=rows(calib.P2), P3=rows(calib.P3))


def scale_depth_rows(rows: np.ndarray, scale: int) -> np.ndarray:
    """Depth rows ``(N, 3)`` ``(u, v, depth)`` in the downsampled image's pixels."""
    if scale == 1:
        return rows
    out = np.array(rows, dtype=np.float32, copy=True).reshape(-1, 3)
    out[:, :2] = (out[:, :2] - (scale - 1) / 2.0) / scale
    return out


def flip_decision(seed: int, epoch: int, index: int, probability: float) -> bool:
    """The stereo-flip coin of sample ``index`` in ``epoch``: a function of ``(seed, epoch, index)`` only."""
    if probability <= 0.0:
        return False
    return bool(np.random.default_rng([seed, epoch, index]).random() < probability)


class StudentFrames(Dataset):
    """``frames[i] -> StudentSample``; call :meth:`set_epoch` before each epoch (it reseeds the flips).

    ``frame_limit`` > 0 keeps only the first that many frames (smoke runs); ``grid`` is the student's anchor grid
    (targets are assigned on it); ``read_features`` also reads the teacher's cached BEV features of each sample's
    view (the feature imitation; it needs ``cache``), so runs without imitation read nothing more.
    """

    def __init__(
        self,
        split: PreparedSplit,
        flip_probability: float = 0.0,
        image_scale: int = 1,
        seed: int = 0,
        cache: TeacherCache | None = None,
        frame_limit: int = 0,
        *,
        grid: AnchorGrid,
        read_features: bool = False,
    ) -> None:
        if image_scale < 1:
            raise ValueError(f"image_scale must be a positive integer, got {image_scale}")
        if read_features and cache is None:
            raise ValueError("read_features needs the teacher cache")
        self.read_features = read_features
        self.split = split
        self.flip_probability = flip_probability
        self.image_scale = image_scale
        self.seed = seed
        self.cache = cache
        self.assigner = TargetAssigner(grid)
        self.length = len(split) if frame_limit <= 0 else min(frame_limit, len(split))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> StudentSample:
        split = self.split
        left, right = split.read_stereo_pair(index)
        calib = split.calibration(index)
        depth = split.read_depth(index)
        flipped = flip_decision(self.seed, self.epoch, index, self.flip_probability)
        if flipped:
            f = flip_stereo(left, right, calib, depth)
            left, right, calib, depth = f.left, f.right, f.calib, f.depth
        view = HFLIP if flipped else IDENTITY
        boxes, names = view_ground_truth(split.labels(index), view)
        boxes = boxes.astype(np.float32)
        ground_truth = ground_truth_from_labels(names, torch.from_numpy(boxes), self.assigner.grid)
        s = self.image_scale
        frame_id = split.frame_ids[index]
        features = None
        if self.read_features and self.cache is not None:
            features = self.cache.read_features(frame_id, view)
        return StudentSample(
            index=index,
            frame_id=frame_id,
            view=view,
            left=downscale_image(np.ascontiguousarray(left), s),
            right=downscale_image(np.ascontiguousarray(right), s),
            calib=scale_calibration(calib, s),
            boxes=boxes,
            names=names,
            depth=scale_depth_rows(np.asarray(depth, dtype=np.float32), s),
            teacher=None if self.cache is None else self.cache.read(frame_id, view),
            ground_truth=ground_truth,
            targets=self.assigner.assign_frame(ground_truth),
            teacher_features=features,
        )


def collate_samples(samples: Sequence[StudentSample]) -> list[StudentSample]:
    return list(samples)


def epoch_loader(
    frames: StudentFrames,
    epoch: int,
    seed: int,
    batch_size: int,
    num_workers: int,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """The batches of ``epoch``: its flips (:meth:`StudentFrames.set_epoch`) and its frame order
    (:func:`~stereodistill.student.ranks.epoch_indices` of ``seed``; rank ``rank`` of ``world`` takes its share),
    in lists of :class:`StudentSample`. The student's training and the trunk's pretraining both read frames so."""
    frames.set_epoch(epoch)
    return DataLoader(
        Subset(frames, epoch_indices(len(frames), seed, epoch, rank, world)),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_samples,
        num_workers=num_workers,
    )


@dataclass(frozen=True)
class StudentInputs:
    """Network inputs of a batch: ``left``, ``right`` ``(B, 3, H, W)`` in [0, 1] (zero-padded bottom/right),
    ``P2 (B, 3, 4)``, ``baseline (B,)``, and each sample's unpadded ``(h, w)``."""

    left: Tensor
    right: Tensor
    P2: Tensor
    baseline: Tensor
    image_hw: list[tuple[int, int]]


def pad_images(images: Sequence[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
    """``(B, H, W, 3)`` uint8: each image zero-padded at the bottom/right to ``hw``."""
    out = np.zeros((len(images), hw[0], hw[1], 3), dtype=np.uint8)
    for k, image in enumerate(images):
        out[k, : image.shape[0], : image.shape[1]] = image
    return out


def batch_inputs(
    lefts: Sequence[np.ndarray],
    rights: Sequence[np.ndarray],
    calibs: Sequence[Calibration],
    device: torch.device | str | None = None,
) -> StudentInputs:
    """Stack a batch's images (padded to the largest) and calibrations into tensors on ``device``."""
    sizes = [(int(im.shape[0]), int(im.shape[1])) for im in lefts]
    hw = (max(h for h, _ in sizes), max(w for _, w in sizes))

    left = images_to_tensor(list(pad_images(lefts, hw)), device)
    right = images_to_tensor(list(pad_images(rights, hw)), device)
    P2, baseline = calibration_tensors(calibs, device)
    return StudentInputs(left, right, P2, baseline, sizes)
