"""Logit quantisation: float32 logits <-> int16 codes with a fixed step.

``code = clip(round(logit / step), -32767, 32767)``; ``logit = code * step``. The read-back error is at most
``step / 2`` for ``|logit| <= 32767 * step`` (512 at the default step 1/64); larger magnitudes saturate.
The code -32768 is never produced: it is the arrays' fill value, meaning "not written".
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from stereodistill.cache.schema import LOGIT_MAX_CODE


def quantise_logits(logits: Tensor, step: float) -> Tensor:
    """int16 codes of ``logits`` (any shape, any device); raises ``ValueError`` on NaN or inf."""
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("the teacher produced NaN or inf logits")
    codes = torch.round(logits.to(torch.float32) / step).clamp_(-LOGIT_MAX_CODE, LOGIT_MAX_CODE)
    return codes.to(torch.int16)


def dequantise_logits(codes: np.ndarray, step: float) -> np.ndarray:
    """float32 logits of int16 ``codes`` (same shape)."""
    return codes.astype(np.float32) * np.float32(step)
