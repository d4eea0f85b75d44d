"""Post-processing: per-anchor head outputs -> scored 3D detections -> KITTI result objects.

Per frame: sigmoid class scores; candidates scoring >= ``score_threshold``; the ``pre_nms_top_k`` best; boxes
decoded against their anchors with the heading's half-turn taken from the direction classifier; rotated BEV
NMS (:mod:`stereodistill.geometry.nms`); at most ``post_nms_top_k`` kept, in descending score order.

- class-agnostic (SECOND's test setting): one candidate per anchor, its best class; NMS across all classes;
- class-aware (LIGA-Stereo's multi-class NMS): one candidate per (anchor, class) pair, so an anchor may yield
  detections of several classes; NMS only between boxes of the same class. ``pre_nms_top_k`` and
  ``post_nms_top_k`` cap the total over classes (OpenPCDet caps pre-NMS per class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from stereodistill.data.labels import KittiObject
from stereodistill.geometry.boxes import boxes_to_image_2d, observation_angle, project_to_kitti_boxes
from stereodistill.geometry.calibration import Calibration
from stereodistill.geometry.nms import batched_rotated_nms, rotated_nms
from stereodistill.head.box_coder import apply_direction, decode_boxes
from stereodistill.head.settings import DecodeSettings


@dataclass(frozen=True)
class Detections:
    """One frame's detections: project boxes ``(K, 7)``, scores ``(K,)`` in ``[0, 1]``, class ids ``(K,)`` long."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])


DEFAULT_DECODE = DecodeSettings()


@torch.no_grad()
def decode_frame(
    cls_logits: Tensor,
    box_preds: Tensor,
    dir_logits: Tensor | None,
    anchors: Tensor,
    settings: DecodeSettings = DEFAULT_DECODE,
) -> Detections:
    """Detections of one frame from per-anchor ``cls_logits (N, C)``, ``box_preds (N, 7)``, ``dir_logits (N, 2)``.

    ``anchors (N, 7)`` are the grid's anchors in the same order. Without ``dir_logits`` the regressed heading
    is used as is.
    """
    n, c = cls_logits.shape
    if (
        box_preds.shape != (n, 7)
        or anchors.shape != (n, 7)
        or (dir_logits is not None and dir_logits.shape[0] != n)
    ):
        raise ValueError(
            f"per-anchor shapes disagree: cls_logits {tuple(cls_logits.shape)}, box_preds {tuple(box_preds.shape)}, "
            f"anchors {tuple(anchors.shape)}, dir_logits {None if dir_logits is None else tuple(dir_logits.shape)}"
        )
    scores_all = torch.sigmoid(cls_logits.float())
    if settings.class_agnostic:
        scores, labels = scores_all.max(dim=1)
        anchor_ids = torch.nonzero(scores >= settings.score_threshold).flatten()
        scores, labels = scores[anchor_ids], labels[anchor_ids]
    else:
        anchor_ids, labels = torch.nonzero(scores_all >= settings.score_threshold, as_tuple=True)
        scores = scores_all[anchor_ids, labels]
    if scores.numel() > settings.pre_nms_top_k:
        top = torch.topk(scores, settings.pre_nms_top_k).indices
        anchor_ids, labels, scores = anchor_ids[top], labels[top], scores[top]
    boxes = decode_boxes(box_preds[anchor_ids].float(), anchors[anchor_ids].float())
    if dir_logits is not None:
        boxes[:, 6] = apply_direction(boxes[:, 6], dir_logits[anchor_ids].argmax(dim=1))
    if settings.class_agnostic:
        keep = rotated_nms(boxes, scores, settings.nms_iou_threshold, settings.post_nms_top_k)
    else:
        keep = batched_rotated_nms(boxes, scores, labels, settings.nms_iou_threshold, settings.post_nms_top_k)
    return Detections(boxes[keep], scores[keep], labels[keep])


def decode_batch(
    cls_logits: Tensor,
    box_preds: Tensor,
    dir_logits: Tensor | None,
    anchors: Tensor,
    settings: DecodeSettings = DEFAULT_DECODE,
) -> list[Detections]:
    """:func:`decode_frame` over a batch: ``cls_logits (B, N, C)``, ``box_preds (B, N, 7)``, ``dir_logits (B, N, 2)``."""
    return [
        decode_frame(
            cls_logits[i], box_preds[i], None if dir_logits is None else dir_logits[i], anchors, settings
        )
        for i in range(cls_logits.shape[0])
    ]


def detections_to_kitti(
    detections: Detections,
    calib: Calibration,
    class_names: Sequence[str],
    image_size: tuple[int, int],
) -> list[KittiObject]:
    """KITTI result objects of one frame's detections (image ``image_size = (height, width)`` of camera 2).

    Location / dimensions / rotation_y from the project box, ``alpha`` the observation angle, the 2D box that of
    the projected 3D box clipped to the image; truncation and occlusion are unknown (-1). Detections whose box
    does not project into the image are dropped.
    """
    if len(detections) == 0:
        return []
    boxes = detections.boxes.detach().cpu().double().numpy()
    scores = detections.scores.detach().cpu().double().numpy()
    labels = detections.labels.detach().cpu().numpy()
    location, dims, rotation_y = project_to_kitti_boxes(boxes)
    alpha = observation_angle(location, rotation_y)
    bbox, valid = boxes_to_image_2d(boxes, calib, image_size=image_size)
    objects = []
    for i in np.flatnonzero(valid):
        objects.append(
            KittiObject(
                type=class_names[int(labels[i])],
                truncated=-1.0,
                occluded=-1,
                alpha=float(alpha[i]),
                bbox=(float(bbox[i, 0]), float(bbox[i, 1]), float(bbox[i, 2]), float(bbox[i, 3])),
                dimensions=(float(dims[i, 0]), float(dims[i, 1]), float(dims[i, 2])),
                location=(float(location[i, 0]), float(location[i, 1]), float(location[i, 2])),
                rotation_y=float(rotation_y[i]),
                score=float(scores[i]),
            )
        )
    return objects
