"""Z-buffered ray casting of a ground plane plus primitives over a structured grid of rays.

The rays of a camera (pixel grid) or of the LiDAR (beam x azimuth grid) share one origin. For each
primitive a *window* (the flat indices of the rays that can possibly hit it, from a conservative
screen-space or angular bound) keeps the cost proportional to the primitive's footprint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stereodistill.data.synth.shapes import Primitives
from stereodistill.geometry.calibration import Calibration

GROUND = -1  # ``prim`` value of a ground hit
MISS = -2  # ``prim`` value of a ray that hits nothing (sky)
NEAREST_SURFACE = 0.5  # nothing in a scene is closer than this to a camera along x (metres)


@dataclass
class Hits:
    """First hits of ``N`` rays: ray parameter ``t (N,)`` (``inf`` on a miss), primitive index ``prim (N,)``
    (or ``GROUND`` / ``MISS``) and unit surface normal ``normal (N, 3)``. ``unoccluded[o]`` counts the rays
    that hit object ``o`` when other geometry is ignored (only filled when asked for)."""

    t: np.ndarray
    prim: np.ndarray
    normal: np.ndarray
    unoccluded: dict[int, int]


def _grid_indices(rows: np.ndarray, cols: np.ndarray, width: int) -> np.ndarray:
    return (rows[:, None] * width + cols[None, :]).ravel()


def image_windows(uv: np.ndarray, behind: np.ndarray, height: int, width: int) -> list[np.ndarray]:
    """Per row ``k`` of ``uv (P, V, 2)`` (pixel projections of ``V`` points), the flat indices of the pixels in
    the projections' bounding rectangle, clipped to the ``height x width`` image; empty where ``behind[k]``."""
    windows: list[np.ndarray] = []
    for k in range(len(uv)):
        if behind[k]:
            windows.append(np.empty(0, dtype=np.int64))
            continue
        u0 = max(int(np.floor(uv[k, :, 0].min())), 0)
        u1 = min(int(np.ceil(uv[k, :, 0].max())), width - 1)
        v0 = max(int(np.floor(uv[k, :, 1].min())), 0)
        v1 = min(int(np.ceil(uv[k, :, 1].max())), height - 1)
        if u1 < u0 or v1 < v0:
            windows.append(np.empty(0, dtype=np.int64))
            continue
        windows.append(_grid_indices(np.arange(v0, v1 + 1), np.arange(u0, u1 + 1), width))
    return windows


def pixel_windows(
    prims: Primitives, calib: Calibration, camera: int, height: int, width: int
) -> list[np.ndarray]:
    """Per primitive, the flat pixel indices inside the projection of its bounding box (clipped to x >= 0.5 m)."""
    lo = prims.centre - prims.half_extent
    hi = prims.centre + prims.half_extent
    lo[:, 0] = np.maximum(lo[:, 0], NEAREST_SURFACE)
    signs = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)
    corners = lo[:, None, :] + signs[None] * (hi - lo)[:, None, :]  # (P, 8, 3)
    uv, _ = calib.project_to_image(corners.reshape(-1, 3), camera)
    return image_windows(uv.reshape(-1, 8, 2), hi[:, 0] < NEAREST_SURFACE, height, width)


def angular_windows(
    prims: Primitives,
    centres_in_sensor: np.ndarray,
    elevations: np.ndarray,
    azimuth0: float,
    azimuth_steps: int,
    max_range: float,
) -> list[np.ndarray]:
    """Per primitive, the flat indices of the (beam, azimuth) rays that can hit its bounding sphere.

    ``centres_in_sensor (P, 3)`` are the primitives' centres in the sensor frame, ``elevations (B,)`` the beam
    elevations (radians), azimuth ``j`` is ``azimuth0 + j * 2 pi / azimuth_steps``; rays are beam-major.
    Primitives entirely beyond ``max_range`` get no rays.
    """
    radius = prims.bounding_radius()
    step = 2 * np.pi / azimuth_steps
    dist = np.linalg.norm(centres_in_sensor, axis=1)
    horizontal = np.hypot(centres_in_sensor[:, 0], centres_in_sensor[:, 1])
    windows: list[np.ndarray] = []
    all_beams = np.arange(len(elevations))
    all_cols = np.arange(azimuth_steps)
    for k in range(prims.count):
        if dist[k] - radius[k] > max_range:
            windows.append(np.empty(0, dtype=np.int64))
            continue
        if dist[k] <= radius[k]:
            windows.append(_grid_indices(all_beams, all_cols, azimuth_steps))
            continue
        el = np.arcsin(centres_in_sensor[k, 2] / dist[k])
        half = np.arcsin(radius[k] / dist[k])
        beams = np.flatnonzero((elevations >= el - half - 1e-9) & (elevations <= el + half + 1e-9))
        if horizontal[k] <= radius[k]:
            cols = all_cols
        else:
            az = np.arctan2(centres_in_sensor[k, 1], centres_in_sensor[k, 0])
            half_az = np.arcsin(radius[k] / horizontal[k])
            j0 = int(np.ceil((az - half_az - azimuth0) / step))
            j1 = int(np.floor((az + half_az - azimuth0) / step))
            cols = np.arange(j0, j1 + 1) % azimuth_steps if j1 >= j0 else np.empty(0, dtype=np.int64)
        windows.append(_grid_indices(beams, np.unique(cols), azimuth_steps))
    return windows


def cast(
    prims: Primitives,
    origin: np.ndarray,
    dirs: np.ndarray,
    windows: list[np.ndarray],
    ground_z: float,
    count_unoccluded: bool = False,
) -> Hits:
    """First hits of rays ``origin (3,) + t * dirs (N, 3)`` with the ground plane and the primitives."""
    n = len(dirs)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = (ground_z - origin[2]) / dirs[:, 2]
    down = (dirs[:, 2] < 0) & (t_ground > 0)
    t = np.where(down, t_ground, np.inf)
    prim = np.where(down, GROUND, MISS).astype(np.int64)
    normal = np.zeros((n, 3))
    normal[:, 2] = 1.0
    unoccluded_rays: dict[int, list[np.ndarray]] = {}
    for k, idx in enumerate(windows):
        if idx.size == 0:
            continue
        t_k, n_k = prims.intersect(k, origin, dirs[idx])
        hit = np.isfinite(t_k)
        if not hit.any():
            continue
        owner = int(prims.owner[k])
        if count_unoccluded and owner >= 0:
            unoccluded_rays.setdefault(owner, []).append(idx[hit])
        closer = t_k < t[idx]
        if closer.any():
            sel = idx[closer]
            t[sel] = t_k[closer]
            prim[sel] = k
            normal[sel] = prims.world_normals(k, n_k[closer])
    unoccluded = {o: int(np.unique(np.concatenate(v)).size) for o, v in unoccluded_rays.items()}
    return Hits(t=t, prim=prim, normal=normal, unoccluded=unoccluded)


def shadow_mask(
    prims: Primitives,
    points: np.ndarray,
    sun: np.ndarray,
    candidates: list[np.ndarray],
) -> np.ndarray:
    """Whether each of ``points (M, 3)`` is shadowed: the ray towards ``sun (3,)`` hits a primitive.

    ``candidates[k]`` are the indices into ``points`` that primitive ``k`` may shadow.
    """
    shadowed = np.zeros(len(points), dtype=bool)
    for k, idx in enumerate(candidates):
        if idx.size == 0:
            continue
        todo = idx[~shadowed[idx]]
        if todo.size == 0:
            continue
        t_k, _ = prims.intersect(k, points[todo], sun)
        shadowed[todo[np.isfinite(t_k)]] = True
    return shadowed
