"""CLD: per-cell anchor distributions, hand-computed KL values with the T^2 factor, region masks and helpers."""

from __future__ import annotations

import math

import pytest
import torch
from grids import small_grid

from stereodistill.distill.cld import (
    CellLayout,
    CldOptions,
    all_cells,
    cell_kl,
    cell_logits,
    cld_loss,
    confident_cells,
)
from stereodistill.head.cells import cells_in_boxes

LN3 = math.log(3.0)


def _hand_kl(p: float) -> float:
    """KL([p, 1 - p] || [0.5, 0.5])."""
    return p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))


def _two_anchor_cells() -> tuple[torch.Tensor, torch.Tensor, CellLayout]:
    """Two cells, one class, two rotations (A = 2). Cell 0: teacher [ln 3, 0] vs student [0, 0]; cell 1 equal."""
    layout = CellLayout(num_cells=2, num_classes=1, num_rotations=2)
    teacher = torch.tensor([[[LN3], [0.0], [1.0], [-2.0]]])
    student = torch.tensor([[[0.0], [0.0], [1.0], [-2.0]]], requires_grad=True)
    return student, teacher, layout


def test_identical_logits_give_zero() -> None:
    layout = CellLayout(num_cells=6, num_classes=3, num_rotations=2)
    logits = torch.randn(2, layout.num_anchors, 3, generator=torch.Generator().manual_seed(0))
    for mode in ("diagonal", "all", "per_class"):
        result = cld_loss(logits, logits.clone(), layout, all_cells(2, layout), CldOptions(mode, 2.0))
        assert result.loss.item() == pytest.approx(0.0, abs=1e-6)
        assert result.num_cells.item() == 12


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_two_anchor_hand_case_with_t_squared(temperature: float) -> None:
    student, teacher, layout = _two_anchor_cells()
    # Teacher distribution at T: softmax([ln 3 / T, 0]); T = 1 -> [3/4, 1/4]; T = 2 -> [sqrt 3, 1] / (sqrt 3 + 1).
    p = 0.75 if temperature == 1.0 else math.sqrt(3) / (math.sqrt(3) + 1)
    kl = _hand_kl(p)
    options = CldOptions("diagonal", temperature)
    only_first = torch.tensor([[True, False]])
    result = cld_loss(student, teacher, layout, only_first, options, weight=3.0)
    assert result.loss.item() == pytest.approx(3.0 * temperature**2 * kl, rel=1e-5)
    # Both cells: the mean over masked cells halves it (cell 1 has KL 0).
    both = cld_loss(student, teacher, layout, torch.tensor([[True, True]]), options)
    assert both.loss.item() == pytest.approx(temperature**2 * kl / 2, rel=1e-5)
    # Outside the region no gradient at all.
    result.loss.backward()
    assert student.grad is not None and student.grad[0, :2].abs().sum() > 0
    assert (student.grad[0, 2:] == 0).all()


def test_t1_value_by_hand() -> None:
    student, teacher, layout = _two_anchor_cells()
    result = cld_loss(student, teacher, layout, torch.tensor([[True, False]]))
    assert result.loss.item() == pytest.approx(
        0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-5
    )  # 0.130812


def test_region_mask_is_respected() -> None:
    g = torch.Generator().manual_seed(1)
    layout = CellLayout(num_cells=5, num_classes=3, num_rotations=2)
    student = torch.randn(2, layout.num_anchors, 3, generator=g)
    teacher = torch.randn(2, layout.num_anchors, 3, generator=g)
    region = torch.tensor([[True, False, True, False, False], [False, False, False, True, False]])
    options = CldOptions("all", 2.0)
    base = cld_loss(student, teacher, layout, region, options)
    per_cell = cell_kl(student, teacher, layout, options)
    assert base.num_cells.item() == 3
    assert base.loss.item() == pytest.approx(4.0 * per_cell[region].mean().item(), rel=1e-5)
    # Changing logits of cells outside the region leaves the loss unchanged.
    changed_s, changed_t = student.clone(), teacher.clone()
    a = layout.anchors_per_cell
    changed_s[0, 1 * a : 2 * a] += 5.0 * torch.randn(a, 3, generator=g)
    changed_t[1, 4 * a : 5 * a] -= 3.0
    assert cld_loss(changed_s, changed_t, layout, region, options).loss.item() == pytest.approx(
        base.loss.item()
    )
    # Inside the region it changes.
    changed_s[0, 0:a] += 1.0 * torch.randn(a, 3, generator=g)
    assert cld_loss(changed_s, teacher, layout, region, options).loss.item() != pytest.approx(
        base.loss.item()
    )


def test_empty_region_gives_attached_zero() -> None:
    student, teacher, layout = _two_anchor_cells()
    result = cld_loss(student, teacher, layout, torch.zeros(1, 2, dtype=torch.bool))
    assert result.loss.item() == 0.0 and result.num_cells.item() == 0
    result.loss.backward()
    assert student.grad is not None


def test_cell_logits_layout_per_mode() -> None:
    # C = 2, R = 2: anchors (class, rotation) = (0,0), (0,1), (1,0), (1,1); anchor a has logits [2a, 2a + 1].
    layout = CellLayout(num_cells=1, num_classes=2, num_rotations=2)
    logits = torch.arange(8.0).reshape(1, 4, 2)
    assert cell_logits(logits, layout, "diagonal").tolist() == [[[[0.0, 2.0, 5.0, 7.0]]]]
    assert cell_logits(logits, layout, "per_class").tolist() == [[[[0.0, 2.0], [5.0, 7.0]]]]
    assert cell_logits(logits, layout, "all").tolist() == [[[list(range(8))]]]
    big = CellLayout(num_cells=7, num_classes=3, num_rotations=2)
    x = torch.zeros(2, big.num_anchors, 3)
    assert cell_logits(x, big, "diagonal").shape == (2, 7, 1, 6)
    assert cell_logits(x, big, "all").shape == (2, 7, 1, 18)
    assert cell_logits(x, big, "per_class").shape == (2, 7, 3, 2)
    assert cell_kl(x, x, big, CldOptions("per_class")).shape == (2, 7)


def test_off_diagonal_logits_do_not_affect_diagonal_mode() -> None:
    layout = CellLayout(num_cells=1, num_classes=2, num_rotations=2)
    teacher = torch.tensor([[[LN3, 9.0], [0.0, -9.0], [7.0, 0.0], [5.0, 0.0]]])
    student = torch.zeros(1, 4, 2)
    region = torch.ones(1, 1, dtype=torch.bool)
    # diagonal: teacher [ln 3, 0, 0, 0] -> [1/2, 1/6, 1/6, 1/6] vs uniform.
    expected = 0.5 * math.log(2.0) + 3 * (1 / 6) * math.log(4 / 6)
    diagonal = cld_loss(student, teacher, layout, region, CldOptions("diagonal"))
    assert diagonal.loss.item() == pytest.approx(expected, rel=1e-5)
    # per_class: class 0 over [ln 3, 0] (KL of [3/4, 1/4]), class 1 over [0, 0] (KL 0); averaged.
    per_class = cld_loss(student, teacher, layout, region, CldOptions("per_class"))
    assert per_class.loss.item() == pytest.approx(_hand_kl(0.75) / 2, rel=1e-5)
    # all: the off-diagonal logits matter.
    assert cld_loss(student, teacher, layout, region, CldOptions("all")).loss.item() > 1.0


def test_teacher_gets_no_gradient() -> None:
    student, teacher, layout = _two_anchor_cells()
    teacher.requires_grad_(True)
    cld_loss(student, teacher, layout, torch.ones(1, 2, dtype=torch.bool)).loss.backward()
    assert teacher.grad is None


def test_bad_shapes_and_options() -> None:
    student, teacher, layout = _two_anchor_cells()
    with pytest.raises(ValueError, match="region"):
        cld_loss(student, teacher, layout, torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="logits"):
        cld_loss(student[:, :3], teacher[:, :3], layout, torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="mode"):
        CldOptions("max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        CldOptions("all", 0.0)


def test_cells_in_boxes_on_a_hand_made_grid() -> None:
    # x in [0, 4], y in [-2, 2], 1 m cells: centres x in {0.5, 1.5, 2.5, 3.5}, y in {-1.5, ..., 1.5}; cell iy * 4 + ix.
    grid = small_grid(4.0, 2.0)
    assert (grid.nx, grid.ny) == (4, 4)
    axis_aligned = torch.tensor([[2.0, 0.0, -1.0, 2.2, 1.2, 1.5, 0.0], [0.5, 1.5, -1.0, 0.2, 0.2, 1.5, 0.0]])
    # A thin box along the 45 degree diagonal through (2, 0) covers centres (1.5, -0.5) and (2.5, 0.5) only
    # ((0.5, -1.5) is 2.12 m along it, beyond its half length 1.45).
    diagonal = torch.tensor([[2.0, 0.0, -1.0, 2.9, 0.3, 1.5, math.pi / 4]])
    mask = cells_in_boxes(grid, [axis_aligned, diagonal, torch.zeros(0, 7)])
    assert mask.shape == (3, 16)
    assert torch.nonzero(mask[0]).flatten().tolist() == [5, 6, 9, 10, 12]
    assert torch.nonzero(mask[1]).flatten().tolist() == [5, 10]
    assert not mask[2].any()
    layout = CellLayout.from_grid(grid)
    assert (layout.num_cells, layout.anchors_per_cell) == (16, 6)


def test_confident_cells() -> None:
    layout = CellLayout(num_cells=3, num_classes=3, num_rotations=2)
    logits = torch.full((1, layout.num_anchors, 3), -5.0)
    logits[0, 0 * 6 + 4, 1] = 0.0  # cell 0: one logit with sigmoid 0.5
    logits[0, 2 * 6 + 1, 2] = -2.0  # cell 2: sigmoid 0.119
    assert confident_cells(logits, layout, 0.1).tolist() == [[True, False, True]]
    assert confident_cells(logits, layout, 0.2).tolist() == [[True, False, False]]
