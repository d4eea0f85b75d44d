"""CLD (Cross-anchor Logit Distillation): the classification half of StereoDistill (docs/METHOD.md §5.4, reconstruction).

The head emits per-anchor class logits ``(B, N, C)`` in the grid's anchor order, ``N = M * A`` with ``M = ny * nx``
BEV cells and ``A = C * R`` anchors per cell ordered ``[class][rotation]`` (anchor ``a = c * R + r``). Instead of
distilling each anchor's sigmoid independently, CLD forms, per cell, softmax distributions over the cell's anchor
logits at temperature ``T``, for teacher and student alike, in one of three modes:

- ``diagonal``: each anchor's own-class logit (anchor ``c * R + r`` -> class ``c``): one distribution over ``A``;
- ``all``: all ``A * C`` logits of the cell: one distribution over ``A * C``;
- ``per_class``: for each class ``c``, a distribution over its ``R`` rotation anchors' class-``c`` logits; the
  ``C`` KL divergences are averaged.

    L = weight * T^2 * mean_{cells in region} KL(p_teacher || p_student)

The teacher is the target (detached). Region helpers: :func:`stereodistill.head.cells.cells_in_boxes` (cell centre
inside a GT BEV box), :func:`confident_cells` (teacher's max sigmoid over the cell >= threshold), :func:`all_cells`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from stereodistill.distill.settings import CLD_MODES, CldMode
from stereodistill.head.anchors import AnchorGrid


@dataclass(frozen=True)
class CellLayout:
    """How per-anchor outputs group into BEV cells: ``num_cells = ny * nx``, ``C`` classes, ``R`` rotations."""

    num_cells: int
    num_classes: int
    num_rotations: int

    def __post_init__(self) -> None:
        if self.num_cells < 1 or self.num_classes < 1 or self.num_rotations < 1:
            raise ValueError(f"CellLayout needs positive sizes, got {self}")

    @classmethod
    def from_grid(cls, grid: AnchorGrid) -> CellLayout:
        return cls(grid.ny * grid.nx, grid.num_classes, grid.num_rotations)

    @property
    def anchors_per_cell(self) -> int:
        """``A = C * R``."""
        return self.num_classes * self.num_rotations

    @property
    def num_anchors(self) -> int:
        return self.num_cells * self.anchors_per_cell


@dataclass(frozen=True)
class CldOptions:
    """CLD variant: ``mode`` (``diagonal`` | ``all`` | ``per_class``) and softmax ``temperature`` T > 0."""

    mode: CldMode = "diagonal"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in CLD_MODES:
            raise ValueError(f"CldOptions.mode must be one of {CLD_MODES}, got {self.mode!r}")
        if not self.temperature > 0:
            raise ValueError(f"CldOptions.temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class CldResult:
    """``loss``: weighted scalar; ``num_cells``: 0-dim long tensor, cells the region selected (all frames).

    ``num_cells`` stays a tensor so that computing the loss never waits for the GPU.
    """

    loss: Tensor
    num_cells: Tensor


def _check_logits(logits: Tensor, layout: CellLayout, name: str) -> None:
    expected = (layout.num_anchors, layout.num_classes)
    if logits.dim() != 3 or tuple(logits.shape[1:]) != expected:
        raise ValueError(
            f"{name} must have shape (B, {expected[0]}, {expected[1]}), got {tuple(logits.shape)}"
        )


def cell_logits(logits: Tensor, layout: CellLayout, mode: CldMode) -> Tensor:
    """Per-anchor logits ``(B, N, C)`` -> ``(B, M, G, S)``: ``G`` distributions of ``S`` logits per cell.

    ``diagonal``: ``(B, M, 1, A)``; ``all``: ``(B, M, 1, A * C)``; ``per_class``: ``(B, M, C, R)``.
    """
    _check_logits(logits, layout, "logits")
    b = logits.shape[0]
    m, c, r = layout.num_cells, layout.num_classes, layout.num_rotations
    if mode == "all":
        return logits.reshape(b, m, 1, c * r * c)
    if mode not in CLD_MODES:
        raise ValueError(f"mode must be one of {CLD_MODES}, got {mode!r}")
    # (B, M, anchor class, rotation, logit class); the diagonal takes anchor class == logit class.
    own_class = torch.diagonal(logits.reshape(b, m, c, r, c), dim1=2, dim2=4)  # (B, M, R, C)
    own_class = own_class.permute(0, 1, 3, 2)  # (B, M, C, R), i.e. anchor order within the cell
    if mode == "diagonal":
        return own_class.reshape(b, m, 1, c * r)
    return own_class


def cell_kl(
    student_logits: Tensor, teacher_logits: Tensor, layout: CellLayout, options: CldOptions
) -> Tensor:
    """Per-cell ``KL(p_teacher || p_student)`` ``(B, M)`` at temperature T (mean over a cell's distributions).

    No ``T^2`` factor here. The teacher is detached.
    """
    _check_logits(teacher_logits, layout, "teacher_logits")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}"
        )
    t = options.temperature
    log_p_student = F.log_softmax(cell_logits(student_logits, layout, options.mode) / t, dim=-1)
    log_p_teacher = F.log_softmax(cell_logits(teacher_logits.detach(), layout, options.mode) / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher.to(log_p_student.dtype), reduction="none", log_target=True)
    return kl.sum(dim=-1).mean(dim=-1)


def cld_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    layout: CellLayout,
    region: Tensor,
    options: CldOptions | None = None,
    *,
    weight: float = 1.0,
) -> CldResult:
    """CLD loss ``weight * T^2 * mean over region cells of KL(p_teacher || p_student)``.

    ``student_logits``, ``teacher_logits`` ``(B, N, C)`` in anchor order; ``region (B, M)`` bool. An empty region
    gives a zero loss (still attached to the student's graph).
    """
    options = options or CldOptions()
    b = student_logits.shape[0]
    if region.shape != (b, layout.num_cells) or region.dtype != torch.bool:
        raise ValueError(
            f"region must be a bool tensor of shape ({b}, {layout.num_cells}), got {region.dtype} {tuple(region.shape)}"
        )
    kl = cell_kl(student_logits, teacher_logits, layout, options)
    region = region.to(kl.device)
    count = region.sum()
    total = torch.where(region, kl, kl.new_zeros(())).sum()
    loss = weight * options.temperature**2 * total / count.clamp(min=1).to(kl.dtype)
    return CldResult(loss=loss, num_cells=count)


# ---------------------------------------------------------------------- regions
def confident_cells(teacher_logits: Tensor, layout: CellLayout, threshold: float) -> Tensor:
    """``(B, M)`` bool: the teacher's largest sigmoid over the cell's ``A * C`` logits is ``>= threshold``."""
    scores = cell_logits(teacher_logits.detach(), layout, "all").amax(dim=(2, 3))
    return torch.sigmoid(scores) >= threshold


def all_cells(batch_size: int, layout: CellLayout, device: torch.device | str | None = None) -> Tensor:
    """``(B, M)`` bool, all True."""
    return torch.ones(batch_size, layout.num_cells, dtype=torch.bool, device=device)
