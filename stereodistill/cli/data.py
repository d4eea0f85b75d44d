"""``stereodistill data check`` (sanity check of a KITTI-layout root) and ``stereodistill prepare`` (pack a split)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from stereodistill.cli.options import progress_option
from stereodistill.data.check import check_dataset, format_summary, has_file_problems
from stereodistill.data.kitti import FRAME_ID, SUBSETS, KittiObjectDataset, read_split_file
from stereodistill.data.prepared import prepare_split
from stereodistill.errors import InputError


def _parse_frame_ids(values: tuple[str, ...]) -> list[str]:
    ids = [part.strip() for value in values for part in value.replace(",", " ").split()]
    for frame_id in ids:
        if not FRAME_ID.match(frame_id):
            raise click.BadParameter(f"expected 6-digit frame ids, got {frame_id!r}", param_hint="--frames")
    return ids


@click.group("data")
def data() -> None:
    """Inspect raw KITTI-layout datasets."""


@data.command("check")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--subset",
    type=click.Choice(SUBSETS),
    default="training",
    show_default=True,
    help="Folder of ROOT to check.",
)
@click.option(
    "--frames",
    "frames",
    multiple=True,
    metavar="ID[,ID...]",
    help="Frames to check (repeat the option or separate ids with commas).",
)
@click.option(
    "--split-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Check the frames of this split list (6-digit ids, one per line).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the per-frame, per-object report here.",
)
@click.option(
    "--png",
    "png_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write <id>_image.png (boxes, LiDAR coloured by depth) and <id>_bev.png per frame here.",
)
@progress_option
def check(
    root: Path,
    subset: str,
    frames: tuple[str, ...],
    split_file: Path | None,
    json_out: Path | None,
    png_dir: Path | None,
    progress: bool,
) -> None:
    """Check the KITTI-layout dataset at ROOT: missing or corrupt files, LiDAR points in each labelled box,
    the overlap of each label's 2D box with its projected 3D box, and whether each stereo pair matches its
    calibration (LiDAR-implied against image-matched disparities). Without --frames or --split-file,
    every frame found in ROOT/SUBSET is checked.

    Exit status: 0 when every checked frame has all its files, readable; 1 when a file is missing or
    corrupt (or the arguments are bad). Low point counts, low IoUs and stereo mismatches are reported,
    not failures.
    """
    if frames and split_file is not None:
        raise click.UsageError("give --frames or --split-file, not both")
    frame_ids = _parse_frame_ids(frames) if frames else None
    if split_file is not None:
        frame_ids = read_split_file(split_file)
    dataset = KittiObjectDataset(root, subset, frame_ids)
    if len(dataset) == 0:
        raise InputError(
            f"no frames found in {subset}/ (expected image_2/, velodyne/, calib/, ... folders)", root
        )
    report = check_dataset(dataset, png_dir=png_dir, progress=progress)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=1) + "\n")
    click.echo(format_summary(report))
    if has_file_problems(report):
        sys.exit(1)


@click.command("prepare")
@click.option(
    "--root",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="KITTI object-layout root (holds training/, testing/).",
)
@click.option(
    "--split-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Split list: 6-digit frame ids, one per line. Its stem names the split.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output HDF5 file, e.g. data/prepared/train.h5.",
)
@click.option(
    "--subset",
    type=click.Choice(SUBSETS),
    default=None,
    help="Folder the frames live in [default: testing for test.txt, else training].",
)
@progress_option
def prepare(root: Path, split_file: Path, out_path: Path, subset: str | None, progress: bool) -> None:
    """Validate a split and pack it (stereo pair, calibration, labels, LiDAR points in the project frame,
    sparse LiDAR depth of the left image) into one HDF5 file. Any missing or malformed file stops it
    with a message naming the file (and line) and exit status 1, and nothing is written.
    """
    prepare_split(root, split_file, out_path, progress=progress, subset=subset)
    click.echo(f"wrote {out_path}")
