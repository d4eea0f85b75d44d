"""LIGA-Stereo's stereo flip augmentation for one frame.

Mirroring both images about their vertical axis and swapping them gives a valid rectified pair of the mirrored
scene: the new left image (image_2) is the mirrored old right image, the new right image the mirrored old left.
The scene mirrors as project ``y -> -y`` (rect ``x -> -x``): the flipped frame is the ``hflip`` view of
:mod:`stereodistill.geometry.views`, whose :func:`~stereodistill.geometry.views.view_ground_truth` gives its GT
boxes. The calibration is ``Calibration.flipped(W)``, for which a mirrored point lands in the new left image at
``u' = W - 1 - u_3`` (``u_3``: the old right image's column), on the same scene content.

Depth rows ``(u, v, depth)`` belong to image_2. After the flip image_2 is the mirrored old *right* image, so the
old rows do not apply by mirroring their ``u``: each row is lifted back to its 3D point with the old ``P2``
(``image_to_project``), mirrored, and re-projected with the new ``P2`` (``prepared.depth_rows``: kept when in
front of the camera and inside the image). Points seen by the old left camera but hidden from the old right one
(stereo occlusion, a few pixels wide at object edges) keep a row they would not have had if the LiDAR had been
projected into the new left image directly; rows that exist only for the new left view (its extra field of view)
are missing. Mirror the LiDAR points (:func:`~stereodistill.geometry.views.mirror_points`) and rebuild rows with
``depth_rows`` to avoid the latter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stereodistill.data.prepared import depth_rows
from stereodistill.geometry.calibration import Calibration
from stereodistill.geometry.views import mirror_points


@dataclass(frozen=True)
class FlippedStereo:
    """One flipped frame: images ``(H, W, 3)``, calibration, depth rows ``(D', 3)``."""

    left: np.ndarray
    right: np.ndarray
    calib: Calibration
    depth: np.ndarray | None


def flip_depth_rows(
    rows: np.ndarray, calib: Calibration, flipped: Calibration, image_hw: tuple[int, int]
) -> np.ndarray:
    """Old image_2 depth rows ``(N, 3)`` -> the flipped frame's image_2 rows (see the module docstring)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    points = calib.image_to_project(rows[:, :2], rows[:, 2], camera=2)
    return depth_rows(mirror_points(points), flipped, image_hw)


def flip_stereo(
    left: np.ndarray,
    right: np.ndarray,
    calib: Calibration,
    depth: np.ndarray | None = None,
) -> FlippedStereo:
    """Flip one stereo frame: images ``(H, W, C)`` of equal size, its calibration and optional depth rows."""
    if left.shape != right.shape or left.ndim < 2:
        raise ValueError(f"stereo images must have one shape (H, W, ...), got {left.shape} and {right.shape}")
    height, width = left.shape[:2]
    new_calib = calib.flipped(width)
    return FlippedStereo(
        left=np.ascontiguousarray(right[:, ::-1]),
        right=np.ascontiguousarray(left[:, ::-1]),
        calib=new_calib,
        depth=None if depth is None else flip_depth_rows(depth, calib, new_calib, (height, width)),
    )
