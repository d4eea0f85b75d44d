"""``stereodistill train-student`` and the ``stereodistill student`` group."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("train-student")
@click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="params.yaml",
    show_default=True,
    help="The params file (sections data, grid, student, distill, cache).",
)
@click.option(
    "--resume/--no-resume", default=False, help="Continue from the last checkpoint in student.out_dir."
)
@click.option("--progress/--no-progress", default=True, help="Progress bars on stderr (only on a terminal).")
def train_student(params_path: Path, resume: bool, progress: bool) -> None:
    """Train the stereo student, distilling the cached teacher when distill.xgd/cld are on."""
    from stereodistill.params import load_params
    from stereodistill.student.run import train_student_from_params

    path = train_student_from_params(load_params(params_path), resume=resume, progress=progress)
    click.echo(f"wrote {path}")


@click.group("student")
def student() -> None:
    """Evaluate stereo students."""


@student.command("evaluate")
@click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="params.yaml",
    show_default=True,
)
@click.option("--progress/--no-progress", default=True)
def evaluate_student(params_path: Path, progress: bool) -> None:
    """Detect on the evaluation split and score with the KITTI protocol (the `evaluate_student` stage)."""
    from stereodistill.params import load_params
    from stereodistill.student.run import evaluate_student_from_params

    evaluate_student_from_params(load_params(params_path), progress=progress)
