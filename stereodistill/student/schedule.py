"""The student's schedules per optimiser step: the learning rate and the regression warm-up."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stereodistill.student.settings import StudentPretrainSettings, StudentTrainSettings


def lr_factor(
    step: int, steps_per_epoch: int, settings: StudentTrainSettings | StudentPretrainSettings
) -> float:
    """Multiplier of ``settings.lr`` at optimiser step ``step`` (0-based)."""
    warmup = settings.warmup_epochs * steps_per_epoch
    if step < warmup:
        return settings.warmup_factor + (1.0 - settings.warmup_factor) * step / warmup
    if settings.schedule == "step":
        epoch = step // steps_per_epoch  # 0-based epoch of this step
        return settings.step_gamma ** sum(1 for e in settings.step_epochs if epoch >= e)
    total = settings.epochs * steps_per_epoch
    progress = (step - warmup) / max(1.0, total - warmup)
    low = settings.min_lr_ratio
    return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def regression_factor(step: int, steps_per_epoch: int, settings: StudentTrainSettings) -> float:
    """Weight of the ``loc`` and ``xgd`` terms at optimiser step ``step`` (0-based): a linear ramp from 0 to 1
    over ``regression_warmup_epochs``, then 1.

    Box-regression gradients that reach the shared backbone before the classifier has found the objects can hold
    a from-scratch student on the focal-loss plateau where it predicts background everywhere (docs/RESULTS.md,
    "what holds the plateau"); the ramp lets classification and depth shape the features first.
    """
    ramp = settings.regression_warmup_epochs * steps_per_epoch
    return 1.0 if step >= ramp else step / ramp
