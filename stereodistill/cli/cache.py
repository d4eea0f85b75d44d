"""``stereodistill cache-teacher`` and the ``stereodistill cache`` group (``info``, ``verify``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command("cache-teacher")
@click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="params.yaml",
    show_default=True,
    help="The params file (sections data, grid, teacher, cache).",
)
@click.option("--force", is_flag=True, help="Recompute the store from scratch even if one exists.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr (only on a terminal).")
def cache_teacher(params_path: Path, force: bool, progress: bool) -> None:
    """Run the frozen teacher over the training split and write the teacher cache (the `cache_teacher` stage).

    An interrupted run is finished by rerunning the same command; under torchrun the ranks share the work.
    """
    from stereodistill.cache.run import cache_settings, cache_teacher_from_params
    from stereodistill.params import load_params

    params = load_params(params_path)
    stats = cache_teacher_from_params(params, force=force, progress=progress)
    click.echo(
        f"wrote {cache_settings(params).store}: {stats.frames_written} frames in {stats.shards_written} shards "
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
        f"on disk:     {summary['bytes_on_disk'] / 1e6:.2f} MB in {summary['files']} files, "
        f"{summary['bytes_per_frame_view'] / 1e6:.3f} MB per frame and view",
        f"complete:    {done['complete']} ({done['shards_complete']}/{done['shards']} shards, "
        f"{done['frames_complete']} frames)",
    ]
    click.echo("\n".join(lines))


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
