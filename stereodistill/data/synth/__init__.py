"""The synthetic stereo + LiDAR benchmark in KITTI's object layout (StereoDistill's embedded default data).

Street scenes (road, lanes, sidewalks, buildings, trees, poles) with cars, vans, pedestrians, seated people
and cyclists are ray-cast into a rectified stereo pair and a spinning LiDAR sweep, and labelled the way KITTI
is. Entry points: :func:`generate_dataset` (whole dataset on disk) and :func:`generate_frame` (one frame in
memory).
"""

from stereodistill.data.synth.dataset import generate_dataset
from stereodistill.data.synth.frame import SynthFrame, generate_frame
from stereodistill.data.synth.presets import DEFAULT_PRESET_NAME, PRESET_NAMES, SynthPreset, preset_by_name
from stereodistill.data.synth.sensors import (
    DEFAULT_LIDAR_PROFILE_NAME,
    LIDAR_PROFILE_NAMES,
    LidarProfile,
    lidar_profile_by_name,
)

__all__ = [
    "DEFAULT_LIDAR_PROFILE_NAME",
    "DEFAULT_PRESET_NAME",
    "LIDAR_PROFILE_NAMES",
    "PRESET_NAMES",
    "LidarProfile",
    "SynthFrame",
    "SynthPreset",
    "generate_dataset",
    "generate_frame",
    "lidar_profile_by_name",
    "preset_by_name",
]
