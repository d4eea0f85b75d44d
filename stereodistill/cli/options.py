"""Options every pipeline command shares: ``--params`` and ``--progress/--no-progress``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

PARAMS_PATH_KEY = "stereodistill.params_path"  # in click's ctx.meta, shared by a command and its group


def _remember_params_path(ctx: click.Context, _param: click.Parameter, value: Path) -> Path:
    ctx.meta[PARAMS_PATH_KEY] = value
    return value


def params_option(sections: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--params FILE`` (default ``params.yaml``) passed as ``params_path``; ``sections`` names what is read.

    The path is also kept in ``ctx.meta`` so the CLI's error printer can name it (see ``cli.main``).
    """
    return click.option(
        "--params",
        "params_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default="params.yaml",
        show_default=True,
        callback=_remember_params_path,
        help=f"The params file (sections {sections}).",
    )


progress_option = click.option(
    "--progress/--no-progress", default=True, help="Progress bars on stderr (only on a terminal)."
)
