"""KITTI-like calibration of the synthetic rig and the pixel rays of its rectified colour cameras.

The scene lives in the project frame (x forward, y left, z up, origin at the rectified camera-0 centre),
with flat ground at ``z = -CAMERA_HEIGHT``. Cameras follow KITTI's ``P_i = K [I | t_i]`` in rectified
camera-0 coordinates, so camera ``i`` sits at ``-t_i`` (rect) and looks along +z_rect.
"""

from __future__ import annotations

import math

import numpy as np

from stereodistill.data.synth.presets import SynthPreset
from stereodistill.data.synth.shapes import rows_times
from stereodistill.geometry.calibration import Calibration
from stereodistill.geometry.frames import RECT_TO_PROJECT, rect_to_project

CAMERA_HEIGHT = 1.65  # metres above the ground plane (rect frame)
GROUND_Z = -CAMERA_HEIGHT  # ground height in the project frame

# t_i of P_i = K [I | t_i] (rect, metres), KITTI's values rounded: camera 2 is 6 cm left of camera 0,
# camera 3 47 cm right of it (baseline 0.5331 m); both with KITTI's ~2.7 mm forward offset.
CAMERA_T: dict[int, tuple[float, float, float]] = {
    0: (0.0, 0.0, 0.0),
    1: (-0.5372, 0.0, 0.0),
    2: (0.0600, 0.0, 0.0027),
    3: (-0.4731, 0.0, 0.0027),
}

# Velodyne origin in unrectified camera-0 coordinates (KITTI: 0.27 m behind, 0.08 m above, 4 mm left).
VELO_IN_CAMERA = np.array([-0.004, -0.076, -0.272])
# Axis change velo (x fwd, y left, z up) -> camera (x right, y down, z fwd).
VELO_TO_CAMERA_AXES = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
IMU_TO_VELO = np.array([[1.0, 0.0, 0.0, -0.8087], [0.0, 1.0, 0.0, 0.3196], [0.0, 0.0, 1.0, -0.7997]])


def small_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation ``(3, 3)`` composed of three axis rotations of at most ``max_deg`` degrees each."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def intrinsics(preset: SynthPreset) -> np.ndarray:
    """The shared rectified intrinsic matrix ``K (3, 3)``."""
    return np.array([[preset.focal, 0.0, preset.cu], [0.0, preset.focal, preset.cv], [0.0, 0.0, 1.0]])


def build_calibration(preset: SynthPreset, rng: np.random.Generator) -> Calibration:
    """One frame's calibration: fixed projections, a near-identity ``R0_rect`` and a jittered LiDAR mount.

    ``R0_rect`` (< 0.25 deg per axis) and the small ``Tr_velo_to_cam`` rotation vary per frame, as they do
    between KITTI drives, so every consumer has to apply them.
    """
    K = intrinsics(preset)
    P = {i: K @ np.hstack([np.eye(3), np.array(t)[:, None]]) for i, t in CAMERA_T.items()}
    r0_rect = small_rotation(rng, 0.25)
    mount = small_rotation(rng, 0.3) @ VELO_TO_CAMERA_AXES
    translation = VELO_IN_CAMERA + rng.uniform(-0.005, 0.005, size=3)
    return Calibration(
        P0=P[0],
        P1=P[1],
        P2=P[2],
        P3=P[3],
        R0_rect=r0_rect,
        Tr_velo_to_cam=np.hstack([mount, translation[:, None]]),
        Tr_imu_to_velo=IMU_TO_VELO.copy(),
    )


def camera_centre(calib: Calibration, camera: int) -> np.ndarray:
    """Optical centre ``(3,)`` of camera ``camera`` in the project frame (``-K^-1 P[:, 3]`` in rect)."""
    P = calib.projection(camera)
    t = np.linalg.solve(P[:, :3], P[:, 3])
    return rect_to_project(-t)


def pixel_rays(calib: Calibration, camera: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays through the pixel centres of camera ``camera``: origin ``(3,)`` and directions ``(H * W, 3)``.

    Both are in the project frame. Directions are ``K^-1 [u, v, 1]`` re-axed, i.e. unit forward component,
    so a ray parameter ``t`` is the depth along the optical axis. Pixels are row-major (``v * W + u``).
    """
    P = calib.projection(camera)
    K_inv = np.linalg.inv(P[:, :3])
    v, u = np.mgrid[0:height, 0:width]
    pix = np.stack([u.ravel(), v.ravel(), np.ones(height * width)], axis=-1).astype(np.float64)
    dirs_rect = rows_times(pix, K_inv)
    return camera_centre(calib, camera), rows_times(dirs_rect, RECT_TO_PROJECT)


def velo_axes_in_project(calib: Calibration) -> np.ndarray:
    """Rotation ``(3, 3)`` taking Velodyne-frame directions to project-frame directions."""
    return RECT_TO_PROJECT @ calib.R0_rect @ calib.Tr_velo_to_cam[:, :3]


def velo_origin(calib: Calibration) -> np.ndarray:
    """The Velodyne origin ``(3,)`` in the project frame."""
    return calib.velo_to_project(np.zeros((1, 3)))[0]
