"""Stereo-pair read time: PreparedSplit (HDF5, one uncompressed chunk per image) against PNG decoding.

Usage::

    python benchmarks/bench_prepared_read.py                      # generates 32 KITTI-sized frames in a temp dir
    python benchmarks/bench_prepared_read.py --root KITTI --split-file data_manifests/kitti/val.txt --limit 200

Prints a markdown table (milliseconds per stereo pair, page cache warm, frames read in random order).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from stereodistill.data.kitti import KittiObjectDataset, read_image, read_split_file
from stereodistill.data.prepared import PreparedSplit, prepare_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kitti_calib_000000 import CALIB_000000  # noqa: E402


def synthetic_picture(rng: np.random.Generator, height: int = 375, width: int = 1242) -> np.ndarray:
    """Smooth colour fields, a few hard edges and sigma=4 sensor noise: PNG sizes close to KITTI's."""
    coarse = rng.uniform(0, 255, (height // 25 + 2, width // 25 + 2, 3)).astype(np.uint8)
    smooth = np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64
    )
    for _ in range(12):
        r0, c0 = rng.integers(0, height - 40), rng.integers(0, width - 80)
        smooth[r0 : r0 + rng.integers(20, 120), c0 : c0 + rng.integers(40, 300)] = rng.uniform(0, 255, 3)
    return np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)


def write_dataset(root: Path, frames: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for folder in ("image_2", "image_3", "velodyne", "calib", "label_2"):
        (root / "training" / folder).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in range(frames)]
    for frame_id in ids:
        left = synthetic_picture(rng)
        Image.fromarray(left).save(root / "training" / "image_2" / f"{frame_id}.png")
        Image.fromarray(np.roll(left, -20, axis=1)).save(root / "training" / "image_3" / f"{frame_id}.png")
        points = np.concatenate(
            [rng.uniform([0, -40, -3], [70, 40, 1], (20000, 3)), rng.uniform(0, 1, (20000, 1))], 1
        )
        points.astype("<f4").tofile(root / "training" / "velodyne" / f"{frame_id}.bin")
        (root / "training" / "calib" / f"{frame_id}.txt").write_text(CALIB_000000)
        (root / "training" / "label_2" / f"{frame_id}.txt").write_text("")
    split_file = root / "ImageSets" / "bench.txt"
    split_file.parent.mkdir(exist_ok=True)
    split_file.write_text("".join(i + "\n" for i in ids))
    return split_file


def time_per_call(fn: Callable[[int], object], order: list[int], repeats: int) -> list[float]:
    for i in order[: min(4, len(order))]:
        fn(i)  # warm-up (page cache, lazy handles)
    times = []
    for _ in range(repeats):
        for i in order:
            start = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="KITTI object-layout root (default: generate one)")
    parser.add_argument("--split-file", type=Path, help="split list for --root")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N frames of the split")
    parser.add_argument("--frames", type=int, default=32, help="frames to generate without --root")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the frames for the HDF5 readers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        if args.root is None:
            root, split_file = tmp_dir / "kitti", write_dataset(tmp_dir / "kitti", args.frames)
        else:
            root, split_file = args.root, args.split_file
        if args.limit is not None:
            limited = tmp_dir / "limited.txt"
            limited.write_text("".join(i + "\n" for i in read_split_file(split_file)[: args.limit]))
            split_file = limited
        out = tmp_dir / "bench.h5"
        start = time.perf_counter()
        prepare_split(root, split_file, out, progress=False)
        prepare_s = time.perf_counter() - start

        dataset = KittiObjectDataset(root, frame_ids=read_split_file(split_file))
        split = PreparedSplit(out)
        order = list(np.random.default_rng(1).permutation(len(split)))
        ids = split.frame_ids

        def png_pair(i: int) -> None:
            paths = dataset.paths(ids[i])
            read_image(paths.image_2), read_image(paths.image_3)

        handle = h5py.File(out, "r")

        def h5py_slicing(i: int) -> None:
            h, w = split.image_shapes[i]
            handle["image_2"][i, :h, :w], handle["image_3"][i, :h, :w]

        rows = [
            ("PNG decode, Pillow (`read_image` x2)", time_per_call(png_pair, order, 1)),
            ("HDF5 h5py slicing `ds[i, :h, :w]` x2", time_per_call(h5py_slicing, order, args.repeats)),
            (
                "HDF5 `PreparedSplit.read_stereo_pair` (direct chunk read)",
                time_per_call(split.read_stereo_pair, order, args.repeats),
            ),
            (
                "HDF5 `PreparedSplit[i]` (pair + points + depth + labels + calib)",
                time_per_call(split.__getitem__, order, args.repeats),
            ),
        ]
        handle.close()
        png_bytes = sum(
            dataset.paths(i).image_2.stat().st_size + dataset.paths(i).image_3.stat().st_size for i in ids
        )
        h5_bytes = out.stat().st_size

    print(f"Command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`\n")
    print(
        f"{len(ids)} frames, image_2+image_3 PNG {png_bytes / 2**20:.1f} MiB, prepared HDF5 {h5_bytes / 2**20:.1f} MiB"
        f" (incl. points), prepare took {prepare_s:.1f} s\n"
    )
    png_median = statistics.median(rows[0][1])
    print("| reader | ms per stereo pair, median | p90 | speed-up vs PNG |")
    print("|---|---|---|---|")
    for name, times in rows:
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"| {name} | {median:.3f} | {p90:.3f} | {png_median / median:.0f}x |")


if __name__ == "__main__":
    main()
