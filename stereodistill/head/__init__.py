"""The detection head shared by the LiDAR teacher and the stereo student.

One small module per job: ``anchors`` (the anchor grid and its order), ``box_coder`` (residual codes and the
direction bins), ``assigner`` (training targets), ``anchor_head`` (the ``nn.Module``), ``losses`` (SECOND's
losses) and ``decode`` (post-processing to detections and KITTI results).
"""

from stereodistill.head.anchor_head import AnchorHead, HeadOutput
from stereodistill.head.anchors import AnchorClass, AnchorGrid
from stereodistill.head.assigner import (
    IGNORE,
    AssignedTargets,
    FrameGroundTruth,
    TargetAssigner,
    ground_truth_from_labels,
    nearest_axis_bev_iou,
)
from stereodistill.head.box_coder import apply_direction, decode_boxes, direction_target, encode_boxes
from stereodistill.head.decode import (
    DecodeSettings,
    Detections,
    decode_batch,
    decode_frame,
    detections_to_kitti,
)
from stereodistill.head.losses import detection_losses, sigmoid_focal_loss

__all__ = [
    "IGNORE",
    "AnchorClass",
    "AnchorGrid",
    "AnchorHead",
    "AssignedTargets",
    "DecodeSettings",
    "Detections",
    "FrameGroundTruth",
    "HeadOutput",
    "TargetAssigner",
    "apply_direction",
    "decode_batch",
    "decode_boxes",
    "decode_frame",
    "detection_losses",
    "detections_to_kitti",
    "direction_target",
    "encode_boxes",
    "ground_truth_from_labels",
    "nearest_axis_bev_iou",
    "sigmoid_focal_loss",
]
