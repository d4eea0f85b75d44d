"""A spinning multi-beam LiDAR at the Velodyne origin, ray-cast against the scene.

Beams are evenly spaced in elevation between the preset's top and bottom angles and fire at evenly
spaced azimuths over 360 degrees (random start per frame). Returns get Gaussian range noise, random and
range/reflectivity-dependent dropout, and an intensity from material reflectivity and incidence angle.
Points are written in the Velodyne frame (x forward, y left, z up), KITTI's ``.bin`` layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stereodistill.data.synth.camera import GROUND_Z, velo_axes_in_project, velo_origin
from stereodistill.data.synth.presets import SynthPreset
from stereodistill.data.synth.raycast import GROUND, MISS, angular_windows, cast
from stereodistill.data.synth.road import ground_albedo
from stereodistill.data.synth.scene import Scene
from stereodistill.data.synth.shapes import Primitives, rows_times
from stereodistill.geometry.calibration import Calibration

RANGE_NOISE = 0.02  # metres (1 sigma)
MIN_RANGE = 1.0
BASE_DROPOUT = 0.03


@dataclass(frozen=True)
class Scan:
    """One LiDAR sweep: ``points (N, 4)`` float32 ``x, y, z, intensity`` (Velodyne frame) and, per point,
    ``owner (N,)``: the labelled object it hit (index into ``Scene.objects``), ``-1`` for scenery and
    ``-2`` for the ground."""

    points: np.ndarray
    owner: np.ndarray


def beam_directions(preset: SynthPreset, azimuth0: float) -> tuple[np.ndarray, np.ndarray]:
    """Beam elevations ``(B,)`` (radians, top first) and unit directions ``(B * A, 3)`` in the Velodyne frame
    (beam-major), for azimuths ``azimuth0 + j * 2 pi / A``."""
    top, bottom = np.deg2rad(preset.lidar_elevation_deg)
    elevations = np.linspace(top, bottom, preset.lidar_beams)
    azimuths = azimuth0 + np.arange(preset.lidar_azimuth_steps) * (2 * np.pi / preset.lidar_azimuth_steps)
    el, az = np.meshgrid(elevations, azimuths, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
    return elevations, dirs.reshape(-1, 3)


def scan(
    scene: Scene, prims: Primitives, calib: Calibration, preset: SynthPreset, rng: np.random.Generator
) -> Scan:
    azimuth0 = float(rng.uniform(-np.pi, np.pi))
    elevations, dirs_velo = beam_directions(preset, azimuth0)
    to_project = velo_axes_in_project(calib)
    origin = velo_origin(calib)
    dirs = rows_times(dirs_velo, to_project)
    centres_velo = rows_times(prims.centre - origin, to_project.T)  # project -> velo (inverse rotation)
    windows = angular_windows(
        prims, centres_velo, elevations, azimuth0, preset.lidar_azimuth_steps, preset.lidar_max_range
    )
    hits = cast(prims, origin, dirs, windows, GROUND_Z)

    keep = np.flatnonzero((hits.prim != MISS) & (hits.t >= MIN_RANGE) & (hits.t <= preset.lidar_max_range))
    t = hits.t[keep]
    prim = hits.prim[keep]
    cos_incidence = np.abs((hits.normal[keep] * dirs[keep]).sum(axis=1))
    reflectivity = np.empty(keep.size)
    on_ground = prim == GROUND
    points_project = origin + t[:, None] * dirs[keep]
    _, reflectivity[on_ground] = ground_albedo(
        scene.layout, points_project[on_ground, :2], np.full(int(on_ground.sum()), 0.02), scene.texture_seed
    )
    table = scene.materials.arrays()
    reflectivity[~on_ground] = table["reflectivity"][prims.material[prim[~on_ground]]]

    relative_range = t / preset.lidar_max_range
    drop_p = BASE_DROPOUT + 0.35 * relative_range**2 * (1.0 - reflectivity) + 0.5 * (cos_incidence < 0.08)
    survive = rng.random(keep.size) >= drop_p
    noisy_range = t + rng.normal(0.0, RANGE_NOISE, size=keep.size)
    intensity = reflectivity * (0.4 + 0.6 * cos_incidence) * (1.0 - 0.25 * relative_range)
    intensity = np.clip(intensity + rng.normal(0.0, 0.02, size=keep.size), 0.0, 1.0)

    xyz = noisy_range[:, None] * dirs_velo[keep]
    points = np.concatenate([xyz, intensity[:, None]], axis=1)[survive].astype(np.float32)
    owner = np.where(prim == GROUND, -2, prims.owner[np.maximum(prim, 0)])[survive]
    return Scan(points=points, owner=owner)
