"""The student's loss log: one row per optimiser step (a DVC plot).

Columns (:func:`log_columns`): ``step``, ``epoch``, every loss term (``total``, ``cls``, ``loc``, ``dir``,
``depth``, ``xgd``, ``cld``, ``imitation``; 0 for a distillation term that is off), ``loc_<code>`` = the regression term split by
residual code before its weight (``x``, ``y``, ``z``, ``l``, ``w``, ``h``, ``heading``; ``loc = loc_weight * sum``),
the batch's positives, ``xgd_kept_<component>`` = the share of XGD candidates whose component was distilled,
``lr``, ``seconds``. Loss terms are averaged over torchrun ranks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stereodistill.distill.components import components
from stereodistill.student.losses import LOC_CODE_COLUMNS, LOSS_TERMS, StepLosses

if TYPE_CHECKING:
    from stereodistill.distill.settings import DistillSettings

LOG_COLUMNS_BASE = ["step", "epoch", *LOSS_TERMS, *LOC_CODE_COLUMNS, "positives", "lr", "seconds"]


def log_columns(distill: DistillSettings) -> list[str]:
    """The log's columns: one ``xgd_kept_<component>`` per component ``distill.xgd`` distils (none when off)."""
    names: tuple[str, ...] = ()
    if distill.xgd.mode == "xgd":
        names = tuple(components(distill.xgd.split))  # type: ignore[arg-type]
    elif distill.xgd.mode == "whole_box":
        names = ("box",)
    return LOG_COLUMNS_BASE[:-2] + [f"xgd_kept_{n}" for n in names] + LOG_COLUMNS_BASE[-2:]


def step_row(
    step: int, epoch: int, values: dict[str, float], losses: StepLosses, lr: float, seconds: float
) -> dict[str, Any]:
    """The row of optimiser step ``step`` (1-based): ``values`` are the loss terms and ``loc_codes`` as floats."""
    row: dict[str, Any] = {"step": step, "epoch": epoch, **{k: f"{v:.6f}" for k, v in values.items()}}
    row["positives"] = losses.num_positive
    row.update({f"xgd_kept_{k}": f"{v:.4f}" for k, v in losses.xgd_kept.items()})
    row.update(lr=f"{lr:.6g}", seconds=f"{seconds:.3f}")
    return row
