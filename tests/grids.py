"""Small anchor grids for head tests: KITTI's three classes (LIGA sizes) on a coarse 1 m grid."""

from __future__ import annotations

import math

from stereodistill.head.anchors import AnchorGrid

CLASS_PARAMS = {
    "Car": {
        "name": "Car",
        "size": [3.9, 1.6, 1.56],
        "bottom_z": -1.65,
        "matched_iou": 0.6,
        "unmatched_iou": 0.45,
    },
    "Pedestrian": {
        "name": "Pedestrian",
        "size": [0.8, 0.6, 1.73],
        "bottom_z": -1.65,
        "matched_iou": 0.5,
        "unmatched_iou": 0.35,
    },
    "Cyclist": {
        "name": "Cyclist",
        "size": [1.76, 0.6, 1.73],
        "bottom_z": -1.65,
        "matched_iou": 0.5,
        "unmatched_iou": 0.35,
    },
}


def small_grid(
    x_max: float, y_half: float, classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
) -> AnchorGrid:
    """Grid over ``x in [0, x_max]``, ``y in [-y_half, y_half]``, 1 m cells, rotations 0 and pi/2."""
    return AnchorGrid.from_params(
        {
            "point_cloud_range": [0.0, -y_half, -3.0, x_max, y_half, 1.0],
            "bev_cell_size": 1.0,
            "rotations": [0.0, math.pi / 2],
            "classes": [dict(CLASS_PARAMS[name]) for name in classes],
        }
    )
