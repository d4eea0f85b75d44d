"""One synthetic frame: calibration, scene, stereo images, LiDAR sweep and labels, from (seed, index)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stereodistill.data.labels import KittiObject
from stereodistill.data.synth.annotate import annotate
from stereodistill.data.synth.camera import build_calibration
from stereodistill.data.synth.lidar import Scan, scan
from stereodistill.data.synth.presets import SynthPreset
from stereodistill.data.synth.render import render_view
from stereodistill.data.synth.scene import Scene, sample_scene
from stereodistill.data.synth.sensors import DEFAULT_LIDAR_PROFILE, LidarProfile
from stereodistill.geometry.calibration import Calibration


@dataclass(frozen=True)
class SynthFrame:
    calib: Calibration
    scene: Scene
    left: np.ndarray  # image_2, (H, W, 3) uint8
    right: np.ndarray  # image_3, (H, W, 3) uint8
    scan: Scan
    labels: list[KittiObject]
    label_sources: list[int]  # per label, its object's index in scene.objects


def frame_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of frame ``index``: independent of every other frame and of the number of frames."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(index,))


def generate_frame(preset: SynthPreset, seed: int, index: int, lidar: LidarProfile = DEFAULT_LIDAR_PROFILE) -> SynthFrame:
    """Frame ``index`` of the dataset with seed ``seed``; deterministic in ``(preset, seed, index, lidar)``.

    The LiDAR sensor profile ``lidar`` draws only from its own stream: it changes the sweep and nothing else
    (calibration, scene, images and labels depend on ``(preset, seed, index)`` alone)."""
    calib_seq, scene_seq, camera_seq, lidar_seq = frame_seed(seed, index).spawn(4)
    calib = build_calibration(preset, np.random.default_rng(calib_seq))
    scene = sample_scene(preset, calib, np.random.default_rng(scene_seq))
    prims = scene.primitives()
    camera_rng = np.random.default_rng(camera_seq)
    left, left_hits = render_view(scene, prims, calib, 2, preset, camera_rng)
    right, _ = render_view(scene, prims, calib, 3, preset, camera_rng)
    sweep = scan(scene, prims, calib, preset, np.random.default_rng(lidar_seq), lidar)
    labels, sources = annotate(scene, prims, left_hits, calib, preset)
    return SynthFrame(calib, scene, left, right, sweep, labels, sources)
