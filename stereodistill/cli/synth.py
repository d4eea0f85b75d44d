"""``stereodistill synth``: write the synthetic stereo + LiDAR benchmark in KITTI's object layout."""

from __future__ import annotations

from pathlib import Path

import click

from stereodistill.cli.options import progress_option
from stereodistill.data.synth import (
    DEFAULT_LIDAR_PROFILE_NAME,
    LIDAR_PROFILE_NAMES,
    PRESET_NAMES,
    generate_dataset,
)


@click.command("synth")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset root to create (training/, ImageSets/).",
)
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    default=160,
    show_default=True,
    help="Frames shared between train and val by --val-fraction.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; same seed, same bytes.")
@click.option(
    "--preset",
    type=click.Choice(PRESET_NAMES),
    default="default",
    show_default=True,
    help="default: CPU-sized (640x192, 32 beams, 45 m); kitti: KITTI's image size, intrinsics and 64 beams.",
)
@click.option(
    "--lidar",
    type=click.Choice(LIDAR_PROFILE_NAMES),
    default=DEFAULT_LIDAR_PROFILE_NAME,
    show_default=True,
    help="LiDAR sensor profile (params data.synth.lidar): ideal: the preset's scanner with light noise; "
    "vlp16 / hdl32: 16 / 32 beams, range noise, dropout on glass, dark paint and at range. Changes the scans only.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Share of frames listed in ImageSets/val.txt (the rest go to train.txt).",
)
@click.option(
    "--extra-val-frames",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="More frames after the FRAMES, listed in val.txt only: a larger val split, the same train split.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists and is not empty.")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Processes to use [default: min(2, CPUs)]."
)
@progress_option
def synth(
    out_dir: Path,
    frames: int,
    seed: int,
    preset: str,
    lidar: str,
    val_fraction: float,
    extra_val_frames: int,
    overwrite: bool,
    workers: int | None,
    progress: bool,
) -> None:
    """Generate FRAMES synthetic frames (stereo PNGs, Velodyne scans, calibration, labels) under OUT."""
    generate_dataset(
        out_dir,
        frames=frames,
        seed=seed,
        preset=preset,
        val_fraction=val_fraction,
        overwrite=overwrite,
        progress=progress,
        workers=workers,
        lidar=lidar,
        extra_val_frames=extra_val_frames,
    )
    click.echo(f"wrote {frames + extra_val_frames} {preset} frames ({lidar} LiDAR) to {out_dir}")
