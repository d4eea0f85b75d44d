"""``stereodistill evaluate``: score a folder of KITTI results files with the official KITTI protocol."""

from __future__ import annotations

from pathlib import Path

import click

from stereodistill.errors import StereoDistillError
from stereodistill.evaluation import DEFAULT_CLASSES, EVALUABLE_CLASSES, evaluate_folders, format_table
from stereodistill.evaluation.report import write_json_atomic


def _parse_classes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    classes = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in classes if name not in EVALUABLE_CLASSES]
    if unknown:
        raise click.BadParameter(
            f"unknown class {', '.join(map(repr, unknown))}; choose from {', '.join(EVALUABLE_CLASSES)}"
        )
    if not classes:
        raise click.BadParameter("no class given")
    if len(set(classes)) != len(classes):
        raise click.BadParameter(f"a class is listed twice in {value!r}")
    return classes


def _read_frame_list(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@click.command("evaluate")
@click.option(
    "--gt-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of KITTI label files (label_2 layout: NNNNNN.txt, DontCare included).",
)
@click.option(
    "--pred-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of results files (16 fields per line, the last is the score); a missing file means no detections.",
)
@click.option(
    "--classes",
    default=",".join(DEFAULT_CLASSES),
    show_default=True,
    callback=_parse_classes,
    help=f"Comma-separated classes to evaluate ({', '.join(EVALUABLE_CLASSES)}).",
)
@click.option(
    "--frames",
    "frames_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Text file of frame ids to evaluate (e.g. ImageSets/val.txt); default: every *.txt in --gt-dir.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the results as JSON here (AP in percent).",
)
def evaluate(
    gt_dir: Path, pred_dir: Path, classes: tuple[str, ...], frames_file: Path | None, json_path: Path | None
) -> None:
    """Evaluate detections with the official KITTI protocol: 2D/BEV/3D/AOS AP, easy/moderate/hard, R11 and R40."""
    try:
        evaluation = evaluate_folders(gt_dir, pred_dir, classes, frame_ids=_read_frame_list(frames_file))
    except StereoDistillError as error:
        raise click.ClickException(str(error)) from error
    click.echo(format_table(evaluation))
    if json_path is not None:
        write_json_atomic(json_path, evaluation)
