"""``stereodistill train-teacher`` and the ``stereodistill teacher`` group."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("train-teacher")
@click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="params.yaml",
    show_default=True,
    help="The params file (sections data, grid, teacher).",
)
@click.option(
    "--resume/--no-resume", default=False, help="Continue from the last checkpoint in teacher.out_dir."
)
@click.option("--progress/--no-progress", default=True, help="Progress bars on stderr (only on a terminal).")
def train_teacher(params_path: Path, resume: bool, progress: bool) -> None:
    """Train the LiDAR teacher on the prepared train split (what the `train_teacher` stage runs)."""
    from stereodistill.params import load_params
    from stereodistill.teacher.run import train_teacher_from_params

    path = train_teacher_from_params(load_params(params_path), resume=resume, progress=progress)
    click.echo(f"wrote {path}")


@click.group("teacher")
def teacher() -> None:
    """Evaluate, inspect or import LiDAR teachers."""


@teacher.command("evaluate")
@click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="params.yaml",
    show_default=True,
)
@click.option("--progress/--no-progress", default=True)
def evaluate_teacher(params_path: Path, progress: bool) -> None:
    """Detect on the evaluation split and score with the KITTI protocol (the `evaluate_teacher` stage)."""
    from stereodistill.params import load_params
    from stereodistill.teacher.run import evaluate_teacher_from_params

    evaluate_teacher_from_params(load_params(params_path), progress=progress)
