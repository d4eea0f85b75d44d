"""``stereodistill evaluate`` (score a folder of KITTI results files with the official KITTI protocol) and
``stereodistill breakdown`` (where those results err: recall and box errors by distance, occlusion, difficulty)."""

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
    frame_ids = _read_frame_list(frames_file)
    _warn_missing_results(gt_dir, pred_dir, frame_ids)
    try:
        evaluation = evaluate_folders(gt_dir, pred_dir, classes, frame_ids=frame_ids)
    except StereoDistillError as error:
        raise click.ClickException(str(error)) from error
    click.echo(format_table(evaluation))
    if json_path is not None:
        write_json_atomic(json_path, evaluation)


def _warn_missing_results(gt_dir: Path, pred_dir: Path, frame_ids: list[str] | None) -> None:
    """Warn on stderr when frames to be scored have no results file: they count as frames without detections,
    as KITTI's protocol says, but the usual cause is scoring predictions of one split against all the labels."""
    frames = frame_ids if frame_ids is not None else sorted(p.stem for p in gt_dir.glob("*.txt"))
    missing = [f for f in frames if not (pred_dir / f"{f}.txt").exists()]
    if missing and pred_dir.is_dir():
        click.echo(
            f"warning: {len(missing)} of {len(frames)} frames have no results file in {pred_dir} (first: "
            f"{missing[0]}.txt); they are scored as frames without detections. Pass --frames to score only "
            "the frames that were predicted.",
            err=True,
        )


def _parse_edges(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        edges = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers (metres), got {value!r}") from None
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise click.BadParameter(f"need at least two increasing edges, got {value!r}")
    return edges


@click.command("breakdown")
@click.option(
    "--pred-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of results files (16 fields per line, the last is the score), one per ground-truth frame; "
    "a file of a frame outside the ground truth is an error.",
)
@click.option(
    "--missing-ok",
    is_flag=True,
    help="A ground-truth frame without a results file has no detections (for tools that skip empty frames); "
    "by default it is an error.",
)
@click.option(
    "--gt-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Ground truth: a folder of KITTI label files (label_2 layout).",
)
@click.option(
    "--gt-split",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Ground truth: a prepared split (e.g. data/prepared/val.h5); instead of --gt-dir.",
)
@click.option(
    "--frames",
    "frames_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --gt-dir: text file of frame ids (e.g. ImageSets/val.txt); default: every *.txt in --gt-dir.",
)
@click.option(
    "--classes",
    default=",".join(DEFAULT_CLASSES),
    show_default=True,
    callback=_parse_classes,
    help=f"Comma-separated classes ({', '.join(EVALUABLE_CLASSES)}).",
)
@click.option(
    "--score-threshold",
    type=click.FloatRange(min=0.0),
    default=0.3,
    show_default=True,
    help="Only detections scoring at least this count (0: every detection in the files).",
)
@click.option(
    "--distance-bins",
    "distance_edges",
    default="0,15,25,45",
    show_default=True,
    callback=_parse_edges,
    help="Edges (m) of the distance bins over the GT's camera depth z; bins are [lo, hi).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the breakdown as JSON here (shares in [0, 1], errors in m and rad).",
)
def breakdown(
    pred_dir: Path,
    missing_ok: bool,
    gt_dir: Path | None,
    gt_split: Path | None,
    frames_file: Path | None,
    classes: tuple[str, ...],
    score_threshold: float,
    distance_edges: tuple[float, ...],
    json_path: Path | None,
) -> None:
    """Where a detector errs: per class, recall at the strict 3D IoU and at BEV IoU 0.5 by distance, occlusion
    and difficulty, missed vs badly localised GT, and box errors (x, y, z, l, w, h, heading, half-turns)."""
    from stereodistill.evaluation.breakdown import (
        BreakdownSettings,
        error_breakdown,
        format_breakdown,
        ground_truth_from_folder,
        ground_truth_from_split,
        read_predictions,
    )

    if (gt_dir is None) == (gt_split is None):
        raise click.UsageError("give the ground truth as exactly one of --gt-dir or --gt-split")
    if frames_file is not None and gt_dir is None:
        raise click.UsageError("--frames goes with --gt-dir (a prepared split has its own frames)")
    settings = BreakdownSettings(classes, score_threshold, distance_edges)
    try:
        if gt_split is not None:
            ground_truth = ground_truth_from_split(gt_split)
        else:
            ground_truth = ground_truth_from_folder(gt_dir, _read_frame_list(frames_file))
        detections, without_file = read_predictions(pred_dir, sorted(ground_truth), missing_ok)
        result = error_breakdown(ground_truth, detections, settings)
    except StereoDistillError as error:
        raise click.ClickException(str(error)) from error
    result["frames_without_results_file"] = len(without_file)
    click.echo(format_breakdown(result))
    if without_file:
        click.echo(
            f"note: {len(without_file)} frame(s) have no results file (no detections), e.g. {without_file[0]}"
        )
    if json_path is not None:
        write_json_atomic(json_path, result)
