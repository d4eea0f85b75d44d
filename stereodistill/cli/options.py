"""Options the pipeline commands share: ``--params``, ``--resume/--no-resume`` and ``--progress/--no-progress``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def params_option(sections: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--params FILE`` (default ``params.yaml``) passed as ``params_path``; ``sections`` names what is read."""
    return click.option(
        "--params",
        "params_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default="params.yaml",
        show_default=True,
        help=f"The params file (sections {sections}).",
    )


def resume_option(model: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--resume/--no-resume`` (default off) of a training command; ``model`` names the params section."""
    return click.option(
        "--resume/--no-resume", default=False, help=f"Continue from the last checkpoint in {model}.out_dir."
    )


progress_option = click.option(
    "--progress/--no-progress", default=True, help="Progress bars on stderr (only on a terminal)."
)
