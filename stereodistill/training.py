"""What the teacher's and the student's training loops share: the loss log and the resumable checkpoint."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stereodistill.checkpoints import save_atomic


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


def save_training_checkpoint(
    path: Path,
    kind: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    identity: dict[str, Any],
) -> None:
    """The state a resumed run needs after ``epoch``, with the run's ``identity`` (compared on resume)."""
    state = {
        "kind": kind,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        **identity,
    }
    save_atomic(state, path)
