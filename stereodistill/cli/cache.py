"""``stereodistill cache-teacher`` and the ``stereodistill cache`` group (info, verify, show, stats)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from stereodistill.cli.options import params_option, progress_option
from stereodistill.geometry.views import IDENTITY, KNOWN_VIEWS

VIEW_HELP = f"The cached view: {' or '.join(KNOWN_VIEWS)}."


@click.command("cache-teacher")
@params_option("data, grid, teacher, cache")
@click.option("--force", is_flag=True, help="Recompute the store from scratch even if one exists.")
@progress_option
def cache_teacher(params_path: Path, force: bool, progress: bool) -> None:
    """Run the frozen teacher over the training split and write the teacher cache (the `cache_teacher` stage).

    An interrupted run is finished by rerunning the same command; under torchrun the ranks share the work.
    """
    from stereodistill.cache.run import cache_teacher_from_params
    from stereodistill.params import load_params

    params = load_params(params_path)
    stats = cache_teacher_from_params(params, force=force, progress=progress)
    click.echo(
        f"wrote {params.cache.store}: {stats.frames_written} frames in {stats.shards_written} shards "
        f"({stats.shards_skipped} already complete), {stats.bytes_on_disk / 1e6:.1f} MB on disk, "
        f"{stats.total_seconds:.1f} s ({stats.forward_seconds:.1f} s in the teacher's forward)"
    )


@click.group("cache")
def cache() -> None:
    """Inspect a teacher cache."""


@cache.command("info")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(store: Path, as_json: bool) -> None:
    """Summarise STORE: frames, views, grid, teacher, dtype, coverage, size on disk, completeness."""
    from stereodistill.cache.inspect import cache_info

    summary = cache_info(store)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    grid, done, cov = summary["grid"], summary["completeness"], summary["coverage"]
    quant = summary["quantisation"]
    lines = [
        f"store:       {summary['path']} (schema {summary['schema_version']})",
        f"frames:      {summary['frames']}, views: {', '.join(summary['views'])}",
        f"grid:        {grid['ny']} x {grid['nx']} cells x {grid['anchors_per_cell']} anchors = "
        f"{grid['num_anchors']} anchors; classes {', '.join(grid['classes'])}",
        f"teacher:     sha256 {summary['teacher']['sha256']}",
        f"logits:      {quant['logits']['dtype']} step {quant['logits']['step']}; boxes {quant['boxes']['dtype']}",
        f"coverage:    iou_floor {cov['iou_floor']}, score_floor {cov['score_floor']}, capacity {cov['capacity']}"
        f" (mean {summary['covered_per_frame_view']['mean']}, max {summary['covered_per_frame_view']['max']})",
        _features_line(summary["features"]),
        f"on disk:     {summary['bytes_on_disk'] / 1e6:.2f} MB in {summary['files']} files, "
        f"{summary['bytes_per_frame_view'] / 1e6:.3f} MB per frame and view",
        f"complete:    {done['complete']} ({done['shards_complete']}/{done['shards']} shards, "
        f"{done['frames_complete']} frames)",
    ]
    click.echo("\n".join(lines))


def _features_line(features: dict) -> str:
    if "bev" not in features["maps"]:
        return "features:    none (cache.features: [])"
    cells = features["cells_per_frame_view"]
    return (
        f"features:    bev, {features['bev_channels']} channels {features['dtype']} at in-box cells "
        f"(mean {cells['mean']}, max {cells['max']}, capacity {features['capacity']}); "
        f"{features['bytes_per_frame_view'] / 1e6:.3f} MB per frame and view "
        f"(dense float32: {features['dense_float32_bytes_per_frame_view'] / 1e6:.2f} MB)"
    )


@cache.command("verify")
@click.argument("store", type=click.Path(path_type=Path))
def verify(store: Path) -> None:
    """Check STORE: completeness, NaN/inf, unwritten values, attribute consistency. Exit 1 on any problem."""
    from stereodistill.cache.inspect import verify_cache

    problems = verify_cache(store)
    for problem in problems:
        click.echo(f"problem: {problem}")
    if problems:
        click.echo(f"{store}: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo(f"{store}: ok")


@cache.command("show")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--frame", "frame_id", required=True, help="The frame's id (e.g. 000123), not its index.")
@click.option("--view", default=IDENTITY, show_default=True, help=VIEW_HELP)
@click.option(
    "--prepared",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A prepared split (HDF5) whose ground-truth boxes are drawn (mirrored for hflip).",
)
@click.option("--png", "png_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--score-threshold", default=0.3, show_default=True, help="Teacher boxes drawn from this score."
)
@click.option("--nms-iou", default=0.01, show_default=True, help="Rotated BEV NMS IoU threshold.")
@click.option(
    "--class-aware", is_flag=True, help="Score per class and NMS per class (default: class-agnostic)."
)
@click.option("--pixels-per-cell", default=4, show_default=True, help="Picture pixels per grid cell.")
@click.option(
    "--heat",
    type=click.Choice(["score", "features"]),
    default="score",
    show_default=True,
    help="Heat map: the teacher's per-cell max score, or the norm of its cached BEV feature at the in-box cells "
    "(the imitation's targets).",
)
def show(
    store: Path,
    frame_id: str,
    view: str,
    prepared: Path | None,
    png_path: Path,
    score_threshold: float,
    nms_iou: float,
    class_aware: bool,
    pixels_per_cell: int,
    heat: str,
) -> None:
    """Draw a BEV picture of one cached frame: the teacher's per-cell max score as a heat map, its boxes after
    NMS (white, heading tick) and, with --prepared, the ground truth in class colours."""
    from stereodistill.cache.show import show_frame
    from stereodistill.head.settings import DecodeSettings

    settings = DecodeSettings(
        score_threshold=score_threshold, nms_iou_threshold=nms_iou, class_agnostic=not class_aware
    )
    shown = show_frame(store, frame_id, view, prepared, settings, pixels_per_cell, heat)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    shown.image.save(png_path)
    for note in shown.notes:
        click.echo(f"note: {note}", err=True)
    gt = f", {len(shown.gt_types)} ground-truth boxes" if prepared is not None else ""
    click.echo(
        f"wrote {png_path} ({shown.image.width} x {shown.image.height}): frame {shown.frame_id} view {view}, "
        f"{len(shown.detections)} teacher boxes with score >= {score_threshold:g}{gt}, "
        f"max cell score {float(shown.cell_scores.max()):.3f}"
    )


def _parse_thresholds(values: tuple[str, ...]) -> dict[str, float]:
    from stereodistill.cache.stats import KITTI_IOU_THRESHOLDS

    out = dict(KITTI_IOU_THRESHOLDS)
    for value in values:
        name, sep, number = value.partition("=")
        try:
            out[name] = float(number)
        except ValueError:
            raise click.BadParameter(
                f"expected NAME=VALUE, got {value!r}", param_hint="--threshold"
            ) from None
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {value!r}", param_hint="--threshold")
    return out


@cache.command("stats")
@click.argument("store", type=click.Path(path_type=Path))
@click.option(
    "--prepared",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The prepared split the cache was written for (its labels give the positives).",
)
@click.option("--view", default=IDENTITY, show_default=True, help=VIEW_HELP)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON here.")
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="CLASS=IOU",
    help="IoU threshold of a class (default Car=0.7, Pedestrian=0.5, Cyclist=0.5); repeatable.",
)
@click.option("--iou", type=click.Choice(["3d", "bev"]), default="3d", show_default=True)
@click.option(
    "--split", "split_kind", type=click.Choice(["groups", "scalars"]), default="groups", show_default=True
)
@click.option("--frames", "max_frames", type=click.IntRange(min=1), help="Only the store's first N frames.")
@progress_option
def stats(
    store: Path,
    prepared: Path,
    view: str,
    json_path: Path | None,
    thresholds: tuple[str, ...],
    iou: str,
    split_kind: str,
    max_frames: int | None,
    progress: bool,
) -> None:
    """Teacher score histograms, anchors above 0.1/0.3/0.5/0.7 per frame, and for the positive anchors the
    share whose teacher box passes the whole-box IoU threshold versus each XGD component pilot."""
    from stereodistill.cache.stats import StatsOptions, cache_stats, format_stats

    options = StatsOptions(
        view=view,
        iou_thresholds=_parse_thresholds(thresholds),
        split=split_kind,  # type: ignore[arg-type]
        iou=iou,  # type: ignore[arg-type]
        max_frames=max_frames,
    )
    result = cache_stats(store, prepared, options, progress=progress)
    click.echo(format_stats(result))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}")
