"""``stereodistill train-student`` and the ``stereodistill student`` group."""

from __future__ import annotations

from pathlib import Path

import click

from stereodistill.cli.options import params_option, progress_option, resume_option


@click.command("train-student")
@params_option("data, grid, student, distill, cache")
@resume_option("student")
@progress_option
def train_student(params_path: Path, resume: bool, progress: bool) -> None:
    """Train the stereo student, distilling the cached teacher when distill.xgd/cld/imitation are on."""
    from stereodistill.params import load_params
    from stereodistill.student.run import train_student_from_params

    path = train_student_from_params(load_params(params_path), resume=resume, progress=progress)
    click.echo(f"wrote {path}")


@click.command("pretrain-student")
@params_option("data, grid, student")
@resume_option("student.pretrain")
@progress_option
def pretrain_student(params_path: Path, resume: bool, progress: bool) -> None:
    """Pretrain the student's stereo trunk on LiDAR depth: the trunk.pt every student starts from."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would write the same files
        raise click.UsageError("pretrain-student runs in one process: start it without torchrun")
    from stereodistill.params import load_params
    from stereodistill.student.pretrain import pretrain_trunk_from_params

    path = pretrain_trunk_from_params(load_params(params_path), resume=resume, progress=progress)
    click.echo(f"wrote {path}")


@click.group("student")
def student() -> None:
    """Evaluate stereo students."""


@student.command("evaluate")
@params_option("data, grid, student, evaluate")
@progress_option
def evaluate_student(params_path: Path, progress: bool) -> None:
    """Detect on the evaluation split and score with the KITTI protocol (the `evaluate_student` stage)."""
    from stereodistill.params import load_params
    from stereodistill.student.evaluate import evaluate_student_from_params

    evaluate_student_from_params(load_params(params_path), progress=progress)
