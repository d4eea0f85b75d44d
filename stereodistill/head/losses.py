"""SECOND detection losses on per-anchor head outputs (docs/METHOD.md §2.4).

- classification: sigmoid focal loss (alpha 0.25, gamma 2) against one-hot targets over the ``C`` classes
  (background = all zeros), on positives and negatives (ignored anchors weigh 0);
- localisation: smooth-L1 (beta 1/9) on the residual codes of positives, with the heading term replaced by
  ``sin(pred - target)`` (computed as ``sin p cos t - cos p sin t``), so the regression is blind to a half-turn;
- direction: 2-bin cross-entropy on positives.

Each term is summed over anchors and divided by the frame's number of positives (at least 1), then averaged
over the batch, and multiplied by its weight (defaults: cls 1.0, loc 2.0, dir 0.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from stereodistill.head.box_coder import CODE_SIZE


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise focal loss ``alpha_t * (1 - p_t)^gamma * BCE(logits, targets)``, same shape as ``logits``."""
    p = torch.sigmoid(logits)
    alpha_t = targets * alpha + (1 - targets) * (1 - alpha)
    one_minus_pt = targets * (1 - p) + (1 - targets) * p
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return alpha_t * one_minus_pt.pow(gamma) * bce


def smooth_l1(diff: Tensor, beta: float = 1.0 / 9.0) -> Tensor:
    """Element-wise smooth-L1 of a difference: ``0.5 d^2 / beta`` if ``|d| < beta`` else ``|d| - 0.5 beta``."""
    n = diff.abs()
    if beta < 1e-5:
        return n
    return torch.where(n < beta, 0.5 * n * n / beta, n - 0.5 * beta)


def sin_difference(pred: Tensor, target: Tensor, dim: int = 6) -> tuple[Tensor, Tensor]:
    """Replace the heading entry ``dim`` of ``(..., 7)`` codes so that ``pred' - target' = sin(pred - target)``."""
    p, t = pred[..., dim : dim + 1], target[..., dim : dim + 1]
    pred = torch.cat([pred[..., :dim], torch.sin(p) * torch.cos(t), pred[..., dim + 1 :]], dim=-1)
    target = torch.cat([target[..., :dim], torch.cos(p) * torch.sin(t), target[..., dim + 1 :]], dim=-1)
    return pred, target


def detection_losses(
    cls_logits: Tensor,
    box_preds: Tensor,
    dir_logits: Tensor,
    labels: Tensor,
    box_targets: Tensor,
    dir_targets: Tensor,
    *,
    cls_weight: float = 1.0,
    loc_weight: float = 2.0,
    dir_weight: float = 0.2,
    alpha: float = 0.25,
    gamma: float = 2.0,
    beta: float = 1.0 / 9.0,
    code_weights: Sequence[float] | None = None,
) -> dict[str, Tensor]:
    """Weighted loss terms ``{"cls", "loc", "dir", "total"}`` (scalars) of a batch, and ``loc_codes`` ``(7,)``.

    ``loc_codes`` (detached) splits the regression term by residual code (``box_coder.CODE_NAMES``) before
    ``loc_weight``: ``loc == loc_weight * loc_codes.sum()``. It shows which codes a network actually learns.

    Per-anchor inputs in the grid's anchor order: ``cls_logits (B, N, C)``, ``box_preds (B, N, 7)``,
    ``dir_logits (B, N, 2)``; targets from the assigner: ``labels (B, N)`` (``0..C-1`` positive, ``C``
    background, -1 ignored), ``box_targets (B, N, 7)``, ``dir_targets (B, N)`` (read only at positives).
    ``code_weights`` (7 numbers) weighs the residual components (default all 1).
    """
    b, n, c = cls_logits.shape
    if (
        labels.shape != (b, n)
        or box_preds.shape != (b, n, CODE_SIZE)
        or box_targets.shape != (b, n, CODE_SIZE)
    ):
        raise ValueError(
            f"shape mismatch: cls_logits {tuple(cls_logits.shape)}, box_preds {tuple(box_preds.shape)}, "
            f"labels {tuple(labels.shape)}, box_targets {tuple(box_targets.shape)}"
        )
    if dir_logits.shape[:2] != (b, n) or dir_targets.shape != (b, n):
        raise ValueError(
            f"shape mismatch: dir_logits {tuple(dir_logits.shape)}, dir_targets {tuple(dir_targets.shape)}"
        )
    positive = (labels >= 0) & (labels < c)
    cared = (labels >= 0).to(cls_logits.dtype)
    pos_weight = positive.to(cls_logits.dtype)
    normaliser = pos_weight.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)

    one_hot = F.one_hot(labels.clamp(min=0), c + 1)[..., :c].to(cls_logits.dtype)
    focal = sigmoid_focal_loss(cls_logits, one_hot, alpha, gamma).sum(dim=-1)  # (B, N)
    cls_loss = (focal * cared / normaliser).sum() / b

    pred, target = sin_difference(box_preds, box_targets.to(box_preds.dtype))
    per_code = smooth_l1(pred - target, beta)
    if code_weights is not None:
        if len(code_weights) != CODE_SIZE:
            raise ValueError(f"code_weights needs {CODE_SIZE} numbers, got {len(code_weights)}")
        per_code = per_code * per_code.new_tensor(list(code_weights))
    # where() rather than a product: a non-finite value at a non-positive anchor must not reach the loss value.
    per_code = torch.where(positive.unsqueeze(-1), per_code, per_code.new_zeros(()))
    loc_codes = (per_code / normaliser.unsqueeze(-1)).sum(dim=(0, 1)) / b  # (7,)
    loc_loss = loc_codes.sum()

    ce = F.cross_entropy(
        dir_logits.reshape(b * n, -1), dir_targets.clamp(min=0).reshape(-1), reduction="none"
    ).view(b, n)
    dir_loss = (torch.where(positive, ce, ce.new_zeros(())) / normaliser).sum() / b

    terms = {"cls": cls_weight * cls_loss, "loc": loc_weight * loc_loss, "dir": dir_weight * dir_loss}
    terms["total"] = terms["cls"] + terms["loc"] + terms["dir"]
    terms["loc_codes"] = loc_codes.detach()
    return terms
