"""3D boxes: KITTI label boxes <-> project-frame boxes, corners, points in boxes, 2D projections.

A **project box** is 7 numbers in the project frame: ``(x, y, z, l, w, h, heading)`` with
``(x, y, z)`` the box *centre*, ``l`` the extent along the heading direction, ``w`` across it,
``h`` vertical, and ``heading`` the yaw of the length axis, counter-clockwise about +z from +x,
wrapped to ``[-pi, pi)``.

A **KITTI label box** is ``location`` (bottom-face centre in rect camera coordinates),
``dimensions`` in KITTI's ``h, w, l`` order and ``rotation_y`` about the camera's +y (down) axis,
with ``rotation_y = 0`` meaning the length axis points along +x_rect (right).

Conversion: ``x = z_rect``, ``y = -x_rect``, ``z = -y_rect + h / 2``, ``heading = -rotation_y - pi/2``.
"""

from __future__ import annotations

import math

import numpy as np

from stereodistill.geometry.angles import wrap_angle
from stereodistill.geometry.calibration import Calibration
from stereodistill.geometry.frames import project_to_rect, rect_to_project


def kitti_to_project_boxes(
    location: np.ndarray, dimensions_hwl: np.ndarray, rotation_y: np.ndarray
) -> np.ndarray:
    """KITTI label fields ``(N, 3)``, ``(N, 3)``, ``(N,)`` -> project boxes ``(N, 7)``."""
    loc = np.asarray(location, dtype=np.float64).reshape(-1, 3)
    hwl = np.asarray(dimensions_hwl, dtype=np.float64).reshape(-1, 3)
    ry = np.asarray(rotation_y, dtype=np.float64).reshape(-1)
    h, w, l = hwl[:, 0], hwl[:, 1], hwl[:, 2]
    centre = rect_to_project(loc)
    centre[:, 2] += h / 2
    heading = wrap_angle(-ry - math.pi / 2)
    return np.stack([centre[:, 0], centre[:, 1], centre[:, 2], l, w, h, heading], axis=-1)


def project_to_kitti_boxes(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project boxes ``(N, 7)`` -> KITTI ``location (N, 3)``, ``dimensions_hwl (N, 3)``, ``rotation_y (N,)``.

    ``rotation_y`` is wrapped to ``[-pi, pi)``.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    bottom = b[:, :3].copy()
    bottom[:, 2] -= b[:, 5] / 2
    location = project_to_rect(bottom)
    dims = np.stack([b[:, 5], b[:, 4], b[:, 3]], axis=-1)
    rotation_y = wrap_angle(-b[:, 6] - math.pi / 2)
    return location, dims, rotation_y


def observation_angle(location: np.ndarray, rotation_y: np.ndarray) -> np.ndarray:
    """KITTI ``alpha``: ``rotation_y - atan2(x_rect, z_rect)`` wrapped to ``[-pi, pi)``."""
    loc = np.asarray(location, dtype=np.float64).reshape(-1, 3)
    return wrap_angle(np.asarray(rotation_y, dtype=np.float64) - np.arctan2(loc[:, 0], loc[:, 2]))


# Unit corners in the box frame (x along length, y along width, z up). Bottom face 0-3, top face 4-7,
# each counter-clockwise seen from above, starting at front-left: front-left, rear-left, rear-right, front-right.
_UNIT_CORNERS = np.array(
    [
        [0.5, 0.5, -0.5],
        [-0.5, 0.5, -0.5],
        [-0.5, -0.5, -0.5],
        [0.5, -0.5, -0.5],
        [0.5, 0.5, 0.5],
        [-0.5, 0.5, 0.5],
        [-0.5, -0.5, 0.5],
        [0.5, -0.5, 0.5],
    ]
)
# The 12 edges as corner-index pairs (bottom ring, top ring, verticals).
BOX_EDGES = np.array(
    [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]]
)


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """Project boxes ``(N, 7)`` -> corners ``(N, 8, 3)`` in the order documented at ``_UNIT_CORNERS``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    local = _UNIT_CORNERS[None] * b[:, None, 3:6]
    c, s = np.cos(b[:, 6])[:, None], np.sin(b[:, 6])[:, None]
    x = local[..., 0] * c - local[..., 1] * s
    y = local[..., 0] * s + local[..., 1] * c
    return np.stack([x, y, local[..., 2]], axis=-1) + b[:, None, :3]


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Membership mask ``(N, P)``: point ``p`` (``points (P, >=3)``, project frame) lies in box ``n``.

    Points on a face count as inside.
    """
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    d = pts[None, :, :] - b[:, None, :3]  # (N, P, 3)
    c, s = np.cos(b[:, 6])[:, None], np.sin(b[:, 6])[:, None]
    along = d[..., 0] * c + d[..., 1] * s
    across = -d[..., 0] * s + d[..., 1] * c
    eps = 1e-9
    return (
        (np.abs(along) <= b[:, None, 3] / 2 + eps)
        & (np.abs(across) <= b[:, None, 4] / 2 + eps)
        & (np.abs(d[..., 2]) <= b[:, None, 5] / 2 + eps)
    )


def boxes_to_image_2d(
    boxes: np.ndarray,
    calib: Calibration,
    image_size: tuple[int, int] | None = None,
    camera: int = 2,
    near: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """2D boxes of project boxes ``(N, 7)`` in image ``camera``: ``(N, 4)`` as ``x1, y1, x2, y2`` and a validity mask.

    The 3D box is first clipped against the plane ``depth = near`` (so a box straddling the camera still
    gets the box of its visible part), its corners and edge-plane intersections are projected, and the
    result is clipped to the image ``image_size = (height, width)`` when given, to ``[0, W-1] x [0, H-1]``
    as KITTI's labels are. A box entirely behind the camera or outside the image is invalid (all NaN).
    """
    corners = box_corners(boxes)  # (N, 8, 3)
    n = corners.shape[0]
    out = np.full((n, 4), np.nan)
    valid = np.zeros(n, dtype=bool)
    P = calib.projection(camera)
    for i in range(n):
        rect = project_to_rect(corners[i])
        depth = rect @ P[2, :3] + P[2, 3]
        pts = [rect[depth >= near]]
        a, b = BOX_EDGES[:, 0], BOX_EDGES[:, 1]
        straddle = (depth[a] - near) * (depth[b] - near) < 0
        if np.any(straddle):
            t = (near - depth[a[straddle]]) / (depth[b[straddle]] - depth[a[straddle]])
            pts.append(rect[a[straddle]] + t[:, None] * (rect[b[straddle]] - rect[a[straddle]]))
        visible = np.concatenate(pts, axis=0)
        if len(visible) == 0:
            continue
        uv, _ = calib.rect_to_image(visible, camera)
        x1, y1 = uv.min(axis=0)
        x2, y2 = uv.max(axis=0)
        if image_size is not None:
            height, width = image_size
            x1, x2 = np.clip([x1, x2], 0, width - 1)
            y1, y2 = np.clip([y1, y2], 0, height - 1)
            if x2 <= x1 or y2 <= y1:
                continue
        out[i] = [x1, y1, x2, y2]
        valid[i] = True
    return out, valid


def iou_2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``(N, M)`` of axis-aligned 2D boxes ``(N, 4)`` and ``(M, 4)`` given as ``x1, y1, x2, y2``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)
