"""LIGA-Stereo's stereo flip augmentation for one frame.

Mirroring both images about their vertical axis and swapping them gives a valid rectified pair of the mirrored
scene: the new left image (image_2) is the mirrored old right image, the new right image the mirrored old left.
The scene mirrors as project ``y -> -y`` (rect ``x -> -x``); the calibration is ``Calibration.flipped(W)``, for
which a mirrored point lands in the new left image at ``u' = W - 1 - u_3`` (``u_3``: the old right image's
column), on the same scene content.

GT boxes mirror as ``y -> -y``, ``heading -> -heading`` (wrapped to ``[-pi, pi)``).

Depth rows ``(u, v, depth)`` belong to image_2. After the flip image_2 is the mirrored old *right* image, so the
old rows do not apply by mirroring their ``u``: each row is lifted back to its 3D point with the old ``P2``
(``image_to_project``), mirrored, and re-projected with the new ``P2`` (``prepared.depth_rows``: kept when in
front of the camera and inside the image). Points seen by the old left camera but hidden from the old right one
(stereo occlusion, a few pixels wide at object edges) keep a row they would not have had if the LiDAR had been
projected into the new left image directly; rows that exist only for the new left view (its extra field of view)
are missing. Pass the LiDAR points to :func:`flip_points` and rebuild rows with ``depth_rows`` to avoid the latter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stereodistill.data.prepared import depth_rows
from stereodistill.geometry.calibration import Calibration


@dataclass(frozen=True)
class FlippedStereo:
    """One flipped frame: images ``(H, W, 3)``, calibration, project boxes ``(N, 7)``, depth rows ``(D', 3)``."""

    left: np.ndarray
    right: np.ndarray
    calib: Calibration
    boxes: np.ndarray | None
    depth: np.ndarray | None


def flip_boxes(boxes: np.ndarray) -> np.ndarray:
    """Project boxes ``(N, 7)`` mirrored ``y -> -y``, ``heading -> -heading`` in ``[-pi, pi)``."""
    out = np.array(boxes, copy=True)
    out[:, 1] = -out[:, 1]
    heading = -out[:, 6].astype(np.float64)
    out[:, 6] = np.mod(heading + math.pi, 2 * math.pi) - math.pi
    return out


def flip_points(points: np.ndarray) -> np.ndarray:
    """Project-frame points ``(N, F)`` (x, y, z, features...) mirrored ``y -> -y``."""
    out = np.array(points, copy=True)
    out[:, 1] = -out[:, 1]
    return out


def flip_depth_rows(
    rows: np.ndarray, calib: Calibration, flipped: Calibration, image_hw: tuple[int, int]
) -> np.ndarray:
    """Old image_2 depth rows ``(N, 3)`` -> the flipped frame's image_2 rows (see the module docstring)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    points = calib.image_to_project(rows[:, :2], rows[:, 2], camera=2)
    return depth_rows(flip_points(points), flipped, image_hw)


def flip_stereo(
    left: np.ndarray,
    right: np.ndarray,
    calib: Calibration,
    boxes: np.ndarray | None = None,
    depth: np.ndarray | None = None,
) -> FlippedStereo:
    """Flip one stereo frame: images ``(H, W, C)`` of equal size, its calibration, optional boxes and depth rows."""
    if left.shape != right.shape or left.ndim < 2:
        raise ValueError(f"stereo images must have one shape (H, W, ...), got {left.shape} and {right.shape}")
    height, width = left.shape[:2]
    new_calib = calib.flipped(width)
    return FlippedStereo(
        left=np.ascontiguousarray(right[:, ::-1]),
        right=np.ascontiguousarray(left[:, ::-1]),
        calib=new_calib,
        boxes=None if boxes is None else flip_boxes(boxes),
        depth=None if depth is None else flip_depth_rows(depth, calib, new_calib, (height, width)),
    )
