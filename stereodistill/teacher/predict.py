"""Teacher inference: per-anchor responses of every frame, and NMS'd detections as KITTI result files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from stereodistill.data.labels import KittiObject, write_label_file
from stereodistill.data.prepared import PreparedSplit
from stereodistill.head.box_coder import apply_direction, decode_boxes
from stereodistill.head.decode import Detections, decode_frame, detections_to_kitti
from stereodistill.head.settings import DecodeSettings
from stereodistill.teacher.model import SecondTeacher


@dataclass(frozen=True)
class TeacherResponse:
    """The teacher's answer for one frame, per anchor in the grid's anchor order (``N`` anchors, ``C`` classes).

    ``cls_logits (N, C)``, ``box_residuals (N, 7)`` (residual codes), ``dir_logits (N, 2)`` and
    ``boxes (N, 7)``: the residuals decoded against the anchors, heading resolved by the direction classifier.
    """

    frame_id: str
    cls_logits: Tensor
    box_residuals: Tensor
    dir_logits: Tensor
    boxes: Tensor


@torch.no_grad()
def iterate_responses(
    model: SecondTeacher, split: PreparedSplit, batch_size: int = 1, progress: bool = True
) -> Iterator[TeacherResponse]:
    """Run ``model`` (eval mode, its device) over every frame of ``split`` in order."""
    model.eval()
    device = model.device
    anchors = model.grid.shared_anchors(device)
    features = model.config.point_features
    bar = tqdm(total=len(split), desc="teacher inference", unit="frame", disable=None if progress else True)
    for start in range(0, len(split), batch_size):
        indices = range(start, min(start + batch_size, len(split)))
        points = [torch.from_numpy(split.read_points(i)[:, :features]).to(device) for i in indices]
        out = model.head.flatten(model(points))
        for k, i in enumerate(indices):
            decoded = decode_boxes(out.box[k], anchors)
            decoded[:, 6] = apply_direction(decoded[:, 6], out.dir[k].argmax(dim=-1))
            yield TeacherResponse(split.frame_ids[i], out.cls[k], out.box[k], out.dir[k], decoded)
        bar.update(len(indices))
    bar.close()


def detect(model: SecondTeacher, response: TeacherResponse, settings: DecodeSettings) -> Detections:
    anchors = model.grid.shared_anchors(response.cls_logits.device)
    return decode_frame(response.cls_logits, response.box_residuals, response.dir_logits, anchors, settings)


def predict_to_kitti(
    model: SecondTeacher,
    split: PreparedSplit,
    settings: DecodeSettings,
    out_dir: str | Path,
    progress: bool = True,
) -> dict[str, list[KittiObject]]:
    """Detections of every frame of ``split``, written as KITTI result files ``out_dir/{frame_id}.txt``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[KittiObject]] = {}
    index = {frame_id: i for i, frame_id in enumerate(split.frame_ids)}
    for response in iterate_responses(model, split, progress=progress):
        i = index[response.frame_id]
        h, w = (int(v) for v in split.image_shapes[i])
        objects = detections_to_kitti(
            detect(model, response, settings), split.calibration(i), model.grid.class_names, (h, w)
        )
        write_label_file(out_dir / f"{response.frame_id}.txt", objects)
        results[response.frame_id] = objects
    return results
