"""Sizes of the synthetic benchmark: camera intrinsics, LiDAR scanner and scene range, one preset per target.

``default`` is CPU-sized (about half KITTI's resolution, a 32-beam scanner and the default anchor grid's
range); ``kitti`` matches KITTI's image size, intrinsics and HDL-64E-like scanner.
"""

from __future__ import annotations

from dataclasses import dataclass

from stereodistill.errors import InputError

PRESET_NAMES: tuple[str, ...] = ("default", "kitti")
DEFAULT_PRESET_NAME = "default"


@dataclass(frozen=True)
class SynthPreset:
    """Everything that differs between presets. Distances are metres, angles degrees."""

    name: str
    image_height: int
    image_width: int
    focal: float  # fu = fv (pixels)
    cu: float
    cv: float  # principal point; cv / height ~ 0.46 puts the horizon where KITTI's is
    lidar_beams: int
    lidar_elevation_deg: tuple[float, float]  # (top beam, bottom beam)
    lidar_azimuth_steps: int  # firings per revolution
    lidar_max_range: float
    label_range: float  # objects up to this forward distance get full 3D labels
    scene_range: float  # labelled-class objects are placed up to here; beyond label_range they are DontCare
    min_visible_pixels: int  # fewer visible pixels in image_2: the object is not labelled at all
    objects_per_frame: tuple[int, int]  # inclusive range of in-view labelled-class objects to place


DEFAULT = SynthPreset(
    name="default",
    image_height=192,
    image_width=640,
    focal=360.0,
    cu=316.0,
    cv=88.0,
    lidar_beams=32,
    lidar_elevation_deg=(2.0, -24.8),
    lidar_azimuth_steps=1440,
    lidar_max_range=60.0,
    label_range=45.0,
    scene_range=60.0,
    min_visible_pixels=12,
    objects_per_frame=(6, 18),
)

KITTI = SynthPreset(
    name="kitti",
    image_height=375,
    image_width=1242,
    focal=721.5377,
    cu=609.5593,
    cv=172.854,
    lidar_beams=64,
    lidar_elevation_deg=(2.0, -24.8),
    lidar_azimuth_steps=2048,
    lidar_max_range=80.0,
    label_range=60.0,
    scene_range=75.0,
    min_visible_pixels=40,
    objects_per_frame=(6, 20),
)


def preset_by_name(name: str) -> SynthPreset:
    """The preset called ``name`` (one of :data:`PRESET_NAMES`)."""
    if name == "default":
        return DEFAULT
    if name == "kitti":
        return KITTI
    raise InputError(f"unknown synthetic preset {name!r} (choose one of: {', '.join(PRESET_NAMES)})")
