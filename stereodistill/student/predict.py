"""Student inference: decoded detections of every frame of a split, written as KITTI result files."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from stereodistill.data.labels import KittiObject, write_label_file
from stereodistill.data.prepared import PreparedSplit
from stereodistill.head.decode import Detections, decode_batch, detections_to_kitti
from stereodistill.head.settings import DecodeSettings
from stereodistill.student.dataset import batch_inputs, downscale_image, scale_calibration
from stereodistill.student.model import StereoStudent


@torch.no_grad()
def detect_frames(
    model: StereoStudent,
    split: PreparedSplit,
    indices: list[int],
    settings: DecodeSettings,
    image_scale: int = 1,
) -> list[Detections]:
    """Detections (project frame) of frames ``indices`` of ``split``, the images downsampled by ``image_scale``
    exactly as in training (calibration scaled with them)."""
    model.eval()
    device = next(model.parameters()).device
    lefts, rights, calibs = [], [], []
    for i in indices:
        left, right = split.read_stereo_pair(i)
        lefts.append(downscale_image(left, image_scale))
        rights.append(downscale_image(right, image_scale))
        calibs.append(scale_calibration(split.calibration(i), image_scale))
    inputs = batch_inputs(lefts, rights, calibs, device)
    head = model.head.flatten(model(inputs.left, inputs.right, inputs.P2, inputs.baseline).head)
    return decode_batch(head.cls, head.box, head.dir, model.grid.shared_anchors(device), settings)


def predict_to_kitti(
    model: StereoStudent,
    split: PreparedSplit,
    settings: DecodeSettings,
    out_dir: str | Path,
    image_scale: int = 1,
    batch_size: int = 2,
    progress: bool = True,
) -> dict[str, list[KittiObject]]:
    """Detections of every frame of ``split``, written as KITTI result files ``out_dir/{frame_id}.txt``.

    The 2D boxes and ``alpha`` are computed with the frame's original (full-size) calibration and image size.
    Frames go ``batch_size`` at a time, padded to the batch's largest image as in training. The default is 2
    because on CPU a batch of one sends the volume's ``conv3d`` down PyTorch's slow native path (three times
    slower per frame than a batch of two).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[KittiObject]] = {}
    bar = tqdm(total=len(split), desc="student inference", unit="frame", disable=None if progress else True)
    for start in range(0, len(split), batch_size):
        indices = list(range(start, min(start + batch_size, len(split))))
        for i, detections in zip(
            indices, detect_frames(model, split, indices, settings, image_scale), strict=True
        ):
            h, w = (int(v) for v in split.image_shapes[i])
            objects = detections_to_kitti(detections, split.calibration(i), model.grid.class_names, (h, w))
            frame_id = split.frame_ids[i]
            write_label_file(out_dir / f"{frame_id}.txt", objects)
            results[frame_id] = objects
        bar.update(len(indices))
    bar.close()
    return results
