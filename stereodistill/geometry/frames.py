"""The project frame and its relation to KITTI's rectified camera frame.

Project frame (used for every 3D quantity in StereoDistill): the rectified left-camera frame
(camera 0 after ``R0_rect``) re-axed LiDAR-style:

    x forward = z_rect,   y left = -x_rect,   z up = -y_rect

The origin is the rectified camera-0 centre, not the Velodyne. Both functions accept numpy arrays or
torch tensors of shape ``(..., 3)`` and return the same type.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

# Rows give project axes in rect coordinates: p = RECT_TO_PROJECT @ r.
RECT_TO_PROJECT = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
PROJECT_TO_RECT = RECT_TO_PROJECT.T


def _stack(parts: list, like: ArrayT) -> ArrayT:
    if isinstance(like, torch.Tensor):
        return torch.stack(parts, dim=-1)
    return np.stack(parts, axis=-1)


def rect_to_project(xyz_rect: ArrayT) -> ArrayT:
    """Rectified camera coordinates ``(..., 3)`` -> project frame ``(..., 3)``."""
    x, y, z = xyz_rect[..., 0], xyz_rect[..., 1], xyz_rect[..., 2]
    return _stack([z, -x, -y], xyz_rect)


def project_to_rect(xyz_project: ArrayT) -> ArrayT:
    """Project frame ``(..., 3)`` -> rectified camera coordinates ``(..., 3)``."""
    x, y, z = xyz_project[..., 0], xyz_project[..., 1], xyz_project[..., 2]
    return _stack([-y, -z, x], xyz_project)
