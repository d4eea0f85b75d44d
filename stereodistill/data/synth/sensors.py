"""Named LiDAR sensor profiles of the synthetic benchmark (``data.synth.lidar``): how the scanner *senses*.

The preset (:mod:`.presets`) sizes the scene and the default scanner; a profile says how a sweep of that scene
is sampled and corrupted: beam layout, range and intensity noise, and which returns are lost (at random, at
range on dim surfaces, at grazing incidence, on glass). ``ideal`` is the benchmark's original scanner
(the preset's beams, 2 cm noise, light dropout); ``vlp16`` and ``hdl32`` are 16- and 32-beam scanners with
the beam layouts of Velodyne's VLP-16 and HDL-32E and the same realistic losses (range noise growing with
range, most car-window returns lost, dark paint lost at range). Profiles change only the LiDAR sweep: scenes, images and labels do not depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from stereodistill.errors import InputError


@dataclass(frozen=True)
class LidarProfile:
    """One scanner model. Distances are metres, angles degrees, probabilities and reflectivities in [0, 1].

    ``beams``, ``elevation_deg`` and ``azimuth_steps`` default (``None``) to the preset's scanner. A return at
    range ``t`` on a surface of reflectivity ``r`` seen at incidence cosine ``c`` is dropped with probability
    ``base_dropout + range_dropout * (t / max_range)**2 * (1 - r) + grazing_dropout * (c < grazing_cos)
    + glass_dropout * on_glass + 1 / (1 + (r * c * (detection_range / t)**2)**2)`` (the last term: the
    LiDAR equation's received power against a detection threshold, 50 % at ``detection_range`` for
    ``r * c = 1``; absent when ``detection_range`` is ``None``). Objects' ``r`` is
    ``(1 - albedo_weight) * material reflectivity + albedo_weight * luminance(material colour)``, so with
    ``albedo_weight > 0`` dark paint and dark clothes return less. Range noise is Gaussian with sigma
    ``range_noise + range_noise_per_metre * t``; intensity noise is Gaussian with sigma ``intensity_noise``.
    """

    name: str
    beams: int | None = None
    elevation_deg: tuple[float, float] | None = None  # (top beam, bottom beam), degrees above horizontal
    azimuth_steps: int | None = None  # firings per revolution
    min_range: float = 1.0  # metres; nearer returns are discarded
    range_noise: float = 0.02  # metres (1 sigma) at zero range
    range_noise_per_metre: float = 0.0  # added sigma per metre of range
    base_dropout: float = 0.03
    range_dropout: float = 0.35
    grazing_dropout: float = 0.5
    grazing_cos: float = 0.08  # incidence cosine below which a return is grazing
    glass_dropout: float = 0.0  # car windows (the CABIN pattern's glass faces)
    albedo_weight: float = 0.0
    detection_range: float | None = None  # metres
    intensity_noise: float = 0.02  # 1 sigma, intensity units [0, 1]


IDEAL = LidarProfile(name="ideal")

VLP16 = LidarProfile(
    name="vlp16",
    beams=16,
    elevation_deg=(15.0, -15.0),  # 2 degree spacing, as Velodyne's VLP-16
    azimuth_steps=1800,  # 0.2 degrees (10 Hz)
    range_noise=0.03,
    range_noise_per_metre=0.001,
    base_dropout=0.05,
    glass_dropout=0.9,
    albedo_weight=0.7,
    detection_range=60.0,
    intensity_noise=0.05,
)

HDL32 = LidarProfile(
    name="hdl32",
    beams=32,
    elevation_deg=(10.67, -30.67),  # 1.33 degree spacing, as Velodyne's HDL-32E
    azimuth_steps=1800,  # 0.2 degrees
    range_noise=0.03,
    range_noise_per_metre=0.001,
    base_dropout=0.05,
    glass_dropout=0.9,
    albedo_weight=0.7,
    detection_range=90.0,  # half lost: r * c = 0.03 (dark paint, oblique) at 15 m, 0.7 (white, head-on) at 75 m
    intensity_noise=0.05,
)

LIDAR_PROFILES: dict[str, LidarProfile] = {p.name: p for p in (IDEAL, VLP16, HDL32)}
LIDAR_PROFILE_NAMES: tuple[str, ...] = tuple(LIDAR_PROFILES)
DEFAULT_LIDAR_PROFILE_NAME = "hdl32"
DEFAULT_LIDAR_PROFILE = LIDAR_PROFILES[DEFAULT_LIDAR_PROFILE_NAME]


def lidar_profile_by_name(name: str) -> LidarProfile:
    """The profile called ``name`` (one of :data:`LIDAR_PROFILE_NAMES`; params key ``data.synth.lidar``)."""
    if name not in LIDAR_PROFILES:
        raise InputError(
            f"unknown LiDAR profile {name!r} for data.synth.lidar / --lidar "
            f"(choose one of: {', '.join(LIDAR_PROFILE_NAMES)})"
        )
    return LIDAR_PROFILES[name]
