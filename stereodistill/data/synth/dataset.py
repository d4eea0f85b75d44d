"""``generate_dataset``: the whole synthetic benchmark on disk, optionally with a two-process pool."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

from tqdm import tqdm

from stereodistill.data.synth.frame import generate_frame
from stereodistill.data.synth.presets import preset_by_name
from stereodistill.data.synth.sensors import DEFAULT_LIDAR_PROFILE_NAME, lidar_profile_by_name
from stereodistill.data.synth.writer import (
    atomic_directory,
    make_layout,
    split_ids,
    write_frame,
    write_image_sets,
)
from stereodistill.errors import InputError


def _write_one(job: tuple[str, str, str, int, int]) -> int:
    """Generate and write one frame (runs in a worker); returns its number of labels."""
    root, preset_name, lidar_name, seed, index = job
    frame = generate_frame(preset_by_name(preset_name), seed, index, lidar_profile_by_name(lidar_name))
    write_frame(Path(root), index, frame)
    return len(frame.labels)


def generate_dataset(
    out_dir: str | Path,
    frames: int,
    seed: int,
    preset: str = "default",
    val_fraction: float = 0.5,
    overwrite: bool = False,
    progress: bool = True,
    workers: int | None = None,
    lidar: str = DEFAULT_LIDAR_PROFILE_NAME,
    extra_val_frames: int = 0,
) -> None:
    """Write ``frames`` synthetic frames in KITTI's object layout to ``out_dir`` (see :mod:`.writer`).

    ``val_fraction`` of ``frames`` go to ``ImageSets/val.txt``, the rest to ``train.txt``; ``extra_val_frames``
    more frames (indices ``frames`` onwards) go to val only, so the val split grows and the train split stays
    the same frames.

    Same arguments give byte-identical files: frame ``i`` depends only on ``(preset, seed, i)``. The output
    is built in a sibling temp directory and renamed into place at the end. ``workers`` defaults to
    ``min(2, CPUs)`` processes (1 runs in this process). ``lidar`` names the LiDAR sensor profile
    (:mod:`.sensors`); it changes the Velodyne scans only.
    """
    preset_by_name(preset)  # validate before touching the disk
    lidar_profile_by_name(lidar)
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise InputError(f"frames must be a positive integer, got {frames!r}")
    if isinstance(extra_val_frames, bool) or not isinstance(extra_val_frames, int) or extra_val_frames < 0:
        raise InputError(f"extra_val_frames must be a non-negative integer, got {extra_val_frames!r}")
    if not 0.0 <= val_fraction <= 1.0:
        raise InputError(f"val_fraction must be in [0, 1], got {val_fraction!r}")
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    total = frames + extra_val_frames
    workers = max(1, min(workers, total))
    train, val = split_ids(frames, val_fraction, seed)
    val += list(range(frames, total))
    with atomic_directory(out_dir, overwrite) as root:
        make_layout(root)
        jobs = [(str(root), preset, lidar, seed, i) for i in range(total)]
        bar = tqdm(
            total=total, desc=f"synth {preset}/{lidar}", unit="frame", disable=None if progress else True
        )
        try:
            if workers == 1:
                for job in jobs:
                    _write_one(job)
                    bar.update()
            else:
                context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
                with context.Pool(workers) as pool:
                    for _ in pool.imap_unordered(_write_one, jobs):
                        bar.update()
        finally:
            bar.close()
        write_image_sets(root, train, val)
