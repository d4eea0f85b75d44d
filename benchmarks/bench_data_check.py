"""Per-frame cost of ``stereodistill data check``, and of its stereo entry, on the synthetic presets.

Usage::

    python benchmarks/bench_data_check.py                       # 8 frames of each preset in a temp dir
    python benchmarks/bench_data_check.py --frames 16 --preset kitti
    python benchmarks/bench_data_check.py --root KITTI --limit 200   # a real copy (training/)

Prints a markdown table: CPU milliseconds per frame (one thread) for the whole check of a frame (file reads
and verification, labels, points in boxes, 2D IoUs, the stereo entry) and for the stereo entry alone
(:func:`stereodistill.data.stereo_check.stereo_agreement` on already decoded images), with the stereo
entry's median error and share within 1 px over the frames.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from stereodistill.data.check import check_frame
from stereodistill.data.kitti import KittiObjectDataset, read_image, read_velodyne
from stereodistill.data.stereo_check import stereo_agreement
from stereodistill.data.synth import PRESET_NAMES, generate_dataset
from stereodistill.geometry.calibration import Calibration


def measure(dataset: KittiObjectDataset, frame_ids: list[str]) -> dict[str, Any]:
    whole, stereo, medians, shares = [], [], [], []
    for frame_id in frame_ids:
        start = time.process_time()
        check_frame(dataset, frame_id)
        whole.append((time.process_time() - start) * 1000.0)
        paths = dataset.paths(frame_id)
        left, right = read_image(paths.image_2), read_image(paths.image_3)
        points, calib = read_velodyne(paths.velodyne), Calibration.from_file(paths.calib)
        start = time.process_time()
        report = stereo_agreement(left, right, calib, points).report()
        stereo.append((time.process_time() - start) * 1000.0)
        medians.append(report["median_abs_error_px"])
        shares.append(report["share_within_1px"])
    return {
        "whole": statistics.median(whole),
        "stereo": statistics.median(stereo),
        "stereo_p90": sorted(stereo)[int(0.9 * (len(stereo) - 1))],
        "median_px": (min(medians), max(medians)),
        "share": (min(shares), max(shares)),
    }


def row(name: str, frames: int, m: dict) -> str:
    return (
        f"| {name} | {frames} | {m['whole']:.0f} | {m['stereo']:.0f} | {m['stereo_p90']:.0f} | "
        f"{m['median_px'][0]:.2f}–{m['median_px'][1]:.2f} | {m['share'][0]:.2f}–{m['share'][1]:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=PRESET_NAMES, action="append", help="default: every preset")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, help="measure this KITTI-layout root instead")
    parser.add_argument("--limit", type=int, default=200, help="frames of --root to measure")
    args = parser.parse_args()

    print(
        "| data | frames | whole check, ms/frame (median) | stereo entry, ms/frame (median) | p90 | "
        "stereo median error (px), min–max | share within 1 px, min–max |"
    )
    print("|---|---|---|---|---|---|---|")
    if args.root is not None:
        dataset = KittiObjectDataset(args.root, "training")
        ids = list(dataset.frame_ids)[: args.limit]
        print(row(str(args.root), len(ids), measure(dataset, ids)))
        return
    for preset in args.preset or PRESET_NAMES:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "data"
            generate_dataset(root, frames=args.frames, seed=args.seed, preset=preset, progress=False)
            dataset = KittiObjectDataset(root, "training")
            print(row(f"synthetic {preset}", args.frames, measure(dataset, list(dataset.frame_ids))))


if __name__ == "__main__":
    main()
