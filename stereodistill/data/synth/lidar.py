"""A spinning multi-beam LiDAR at the Velodyne origin, ray-cast against the scene.

Beams are evenly spaced in elevation between the top and bottom angles and fire at evenly spaced azimuths
over 360 degrees (random start per frame); the beam layout is the preset's unless the sensor profile
(:mod:`.sensors`) sets its own. Returns get Gaussian range noise, random, range/reflectivity-dependent,
grazing-incidence, glass and detection-threshold dropout (as the profile says), and an intensity from
reflectivity and incidence angle. Points are written in the Velodyne frame (x forward, y left, z up), KITTI's
``.bin`` layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stereodistill.data.synth.camera import GROUND_Z, velo_axes_in_project, velo_origin
from stereodistill.data.synth.materials import CABIN
from stereodistill.data.synth.presets import SynthPreset
from stereodistill.data.synth.raycast import GROUND, MISS, Hits, angular_windows, cast
from stereodistill.data.synth.road import ground_albedo
from stereodistill.data.synth.scene import Scene
from stereodistill.data.synth.sensors import IDEAL, LidarProfile
from stereodistill.data.synth.shapes import Primitives, rows_times
from stereodistill.geometry.calibration import Calibration

GLASS_MAX_NORMAL_Z = (
    0.8  # CABIN faces with a flatter (more vertical) normal than this are glass (as render.py)
)
LUMINANCE = np.array([0.2126, 0.7152, 0.0722])  # linear RGB -> luminance


@dataclass(frozen=True)
class Scan:
    """One LiDAR sweep: ``points (N, 4)`` float32 ``x, y, z, intensity`` (Velodyne frame) and, per point,
    ``owner (N,)``: the labelled object it hit (index into ``Scene.objects``), ``-1`` for scenery and
    ``-2`` for the ground."""

    points: np.ndarray
    owner: np.ndarray


@dataclass(frozen=True)
class ScannerGeometry:
    """The beam layout: ``beams`` elevations from ``elevation_deg[0]`` (top) to ``elevation_deg[1]`` (bottom),
    degrees, and ``azimuth_steps`` firings per revolution."""

    beams: int
    elevation_deg: tuple[float, float]
    azimuth_steps: int


def scanner_geometry(preset: SynthPreset, profile: LidarProfile = IDEAL) -> ScannerGeometry:
    """The profile's beam layout, each unset field taken from the preset's scanner."""
    return ScannerGeometry(
        beams=profile.beams if profile.beams is not None else preset.lidar_beams,
        elevation_deg=profile.elevation_deg
        if profile.elevation_deg is not None
        else preset.lidar_elevation_deg,
        azimuth_steps=profile.azimuth_steps
        if profile.azimuth_steps is not None
        else preset.lidar_azimuth_steps,
    )


def beam_directions(geometry: ScannerGeometry, azimuth0: float) -> tuple[np.ndarray, np.ndarray]:
    """Beam elevations ``(B,)`` (radians, top first) and unit directions ``(B * A, 3)`` in the Velodyne frame
    (beam-major), for azimuths ``azimuth0 + j * 2 pi / A``."""
    top, bottom = np.deg2rad(geometry.elevation_deg)
    elevations = np.linspace(top, bottom, geometry.beams)
    azimuths = azimuth0 + np.arange(geometry.azimuth_steps) * (2 * np.pi / geometry.azimuth_steps)
    el, az = np.meshgrid(elevations, azimuths, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
    return elevations, dirs.reshape(-1, 3)


def _reflectivity(
    scene: Scene, prims: Primitives, prim: np.ndarray, points_project: np.ndarray, profile: LidarProfile
) -> np.ndarray:
    """Per return, the surface's LiDAR reflectivity in [0, 1]: the road texture's on the ground; elsewhere the
    material's, blended towards the material colour's luminance by ``profile.albedo_weight``."""
    reflectivity = np.empty(prim.size)
    on_ground = prim == GROUND
    _, reflectivity[on_ground] = ground_albedo(
        scene.layout, points_project[on_ground, :2], np.full(int(on_ground.sum()), 0.02), scene.texture_seed
    )
    table = scene.materials.arrays()
    material = prims.material[prim[~on_ground]]
    reflectivity[~on_ground] = table["reflectivity"][material]
    if profile.albedo_weight:
        luminance = table["colour"][material] @ LUMINANCE
        w = profile.albedo_weight
        reflectivity[~on_ground] = (1.0 - w) * reflectivity[~on_ground] + w * luminance
    return reflectivity


def _on_glass(scene: Scene, prims: Primitives, prim: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Whether each return hit car glass: a CABIN-pattern face that is not the roof (project-frame normal)."""
    glass = np.zeros(prim.size, dtype=bool)
    solid = prim != GROUND
    pattern = scene.materials.arrays()["pattern"][prims.material[prim[solid]]]
    glass[solid] = (pattern == CABIN) & (normal[solid, 2] <= GLASS_MAX_NORMAL_Z)
    return glass


def _drop_probability(
    t: np.ndarray,
    reflectivity: np.ndarray,
    cos_incidence: np.ndarray,
    glass: np.ndarray | None,
    max_range: float,
    profile: LidarProfile,
) -> np.ndarray:
    """Per return at range ``t`` (metres), the probability it is lost (may exceed 1); see :class:`LidarProfile`."""
    relative_range = t / max_range
    drop_p = (
        profile.base_dropout
        + profile.range_dropout * relative_range**2 * (1.0 - reflectivity)
        + profile.grazing_dropout * (cos_incidence < profile.grazing_cos)
    )
    if profile.glass_dropout and glass is not None:
        drop_p = drop_p + profile.glass_dropout * glass
    if profile.detection_range is not None:
        power = reflectivity * cos_incidence * (profile.detection_range / t) ** 2
        drop_p = drop_p + 1.0 / (1.0 + power**2)
    return drop_p


def _range_noise_sigma(t: np.ndarray, profile: LidarProfile) -> float | np.ndarray:
    """Range noise sigma (metres) per return at range ``t`` (a scalar when it does not grow with range)."""
    if profile.range_noise_per_metre:
        return profile.range_noise + profile.range_noise_per_metre * t
    return profile.range_noise


def _cast_sweep(
    prims: Primitives, calib: Calibration, geometry: ScannerGeometry, max_range: float, azimuth0: float
) -> tuple[Hits, np.ndarray, np.ndarray, np.ndarray]:
    """First hits of every beam x azimuth ray; also the rays' directions in the Velodyne and project frames
    and the sensor origin (project frame)."""
    elevations, dirs_velo = beam_directions(geometry, azimuth0)
    to_project = velo_axes_in_project(calib)
    origin = velo_origin(calib)
    dirs = rows_times(dirs_velo, to_project)
    centres_velo = rows_times(prims.centre - origin, to_project.T)  # project -> velo (inverse rotation)
    windows = angular_windows(prims, centres_velo, elevations, azimuth0, geometry.azimuth_steps, max_range)
    return cast(prims, origin, dirs, windows, GROUND_Z), dirs_velo, dirs, origin


def scan(
    scene: Scene,
    prims: Primitives,
    calib: Calibration,
    preset: SynthPreset,
    rng: np.random.Generator,
    profile: LidarProfile = IDEAL,
) -> Scan:
    """One sweep of ``scene`` by the preset's scanner as sensed by ``profile``; ``rng`` is the LiDAR's own
    stream (nothing else in the frame draws from it)."""
    max_range = preset.lidar_max_range
    azimuth0 = float(rng.uniform(-np.pi, np.pi))
    hits, dirs_velo, dirs, origin = _cast_sweep(
        prims, calib, scanner_geometry(preset, profile), max_range, azimuth0
    )

    keep = np.flatnonzero((hits.prim != MISS) & (hits.t >= profile.min_range) & (hits.t <= max_range))
    t = hits.t[keep]
    prim = hits.prim[keep]
    cos_incidence = np.abs((hits.normal[keep] * dirs[keep]).sum(axis=1))
    points_project = origin + t[:, None] * dirs[keep]
    reflectivity = _reflectivity(scene, prims, prim, points_project, profile)
    glass = _on_glass(scene, prims, prim, hits.normal[keep]) if profile.glass_dropout else None

    drop_p = _drop_probability(t, reflectivity, cos_incidence, glass, max_range, profile)
    survive = rng.random(keep.size) >= drop_p
    noisy_range = t + rng.normal(0.0, _range_noise_sigma(t, profile), size=keep.size)
    intensity = reflectivity * (0.4 + 0.6 * cos_incidence) * (1.0 - 0.25 * t / max_range)
    intensity = np.clip(intensity + rng.normal(0.0, profile.intensity_noise, size=keep.size), 0.0, 1.0)

    xyz = noisy_range[:, None] * dirs_velo[keep]
    points = np.concatenate([xyz, intensity[:, None]], axis=1)[survive].astype(np.float32)
    owner = np.where(prim == GROUND, -2, prims.owner[np.maximum(prim, 0)])[survive]
    return Scan(points=points, owner=owner)
