"""LiDAR returns per labelled car, by distance, for each sensor profile on the same scenes (docs/RESULTS.md).

For frames ``0 .. --frames-1`` of the synthetic benchmark (``--seed``, default preset), every profile scans the
same scene with the frame's own LiDAR random stream (``data/synth/frame.py``), so the profiles differ only in how
they sense. Per distance bin (camera range to the car's centre): the number of cars, the median number of
returns on a car, and the share of cars with fewer than 5 returns.

    python benchmarks/lidar_points_per_car.py [--frames 40] [--profiles ideal vlp16 hdl32]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from stereodistill.data.synth.annotate import annotate
from stereodistill.data.synth.camera import build_calibration
from stereodistill.data.synth.frame import frame_seed
from stereodistill.data.synth.lidar import scan
from stereodistill.data.synth.presets import DEFAULT_PRESET_NAME, preset_by_name
from stereodistill.data.synth.render import render_view
from stereodistill.data.synth.scene import sample_scene
from stereodistill.data.synth.sensors import LIDAR_PROFILE_NAMES, lidar_profile_by_name

EDGES = (0, 10, 15, 20, 25, 30, 40, 60)


def returns_per_car(frames: int, seed: int, profiles: list[str]) -> dict[str, list[tuple[float, int]]]:
    """Per profile, ``(range in metres, returns)`` of every labelled car of the frames."""
    preset = preset_by_name(DEFAULT_PRESET_NAME)
    cars: dict[str, list[tuple[float, int]]] = {name: [] for name in profiles}
    for index in range(frames):
        calib_seq, scene_seq, camera_seq, lidar_seq = frame_seed(seed, index).spawn(4)
        calib = build_calibration(preset, np.random.default_rng(calib_seq))
        scene = sample_scene(preset, calib, np.random.default_rng(scene_seq))
        prims = scene.primitives()
        _, left_hits = render_view(scene, prims, calib, 2, preset, np.random.default_rng(camera_seq))
        labels, sources = annotate(scene, prims, left_hits, calib, preset)
        for name in profiles:
            sweep = scan(
                scene, prims, calib, preset, np.random.default_rng(lidar_seq), lidar_profile_by_name(name)
            )
            for label, source in zip(labels, sources, strict=True):
                if label.type == "Car":
                    distance = float(np.hypot(label.location[0], label.location[2]))
                    cars[name].append((distance, int(np.count_nonzero(sweep.owner == source))))
    return cars


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--profiles", nargs="+", default=list(LIDAR_PROFILE_NAMES), choices=LIDAR_PROFILE_NAMES
    )
    args = parser.parse_args()
    cars = returns_per_car(args.frames, args.seed, args.profiles)
    print(f"{args.frames} frames, seed {args.seed}: median returns per car (share under 5 returns)")
    print("distance   cars" + "".join(f"{name:>16}" for name in args.profiles))
    for low, high in zip(EDGES[:-1], EDGES[1:], strict=False):
        cells, count = [], 0
        for name in args.profiles:
            rows = np.array(cars[name], dtype=np.float64).reshape(-1, 2)
            returns = rows[(rows[:, 0] >= low) & (rows[:, 0] < high), 1]
            count = returns.size
            cells.append(f"{np.median(returns):.0f} ({np.mean(returns < 5):.0%})" if count else "-")
        print(f"{low:>2}-{high:<2} m  {count:>5}" + "".join(f"{cell:>16}" for cell in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
