"""The training loss log: a CSV with one row per epoch (teacher) or optimiser step (student), a DVC plot."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def read_loss_log(path: Path, up_to_epoch: int) -> list[dict[str, str]]:
    """The rows of the CSV loss log at ``path`` whose ``epoch`` is at most ``up_to_epoch`` (none if absent)."""
    if not path.exists():
        return []
    with path.open() as f:
        return [row for row in csv.DictReader(f) if int(row["epoch"]) <= up_to_epoch]


def write_loss_log(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write the whole log to a temporary file, then rename it over ``path`` (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
