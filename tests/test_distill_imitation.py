"""LIGA's BEV feature imitation loss: a hand-computed value, the floor of 10 cells, all-zero teacher cells dropped,
gradients only at the imitated cells, the empty batch, shape errors."""

from __future__ import annotations

import pytest
import torch

from stereodistill.distill.imitation import imitation_loss


def _pred(b: int = 1, channels: int = 2, ny: int = 2, nx: int = 3) -> torch.Tensor:
    return torch.zeros(b, channels, ny, nx, requires_grad=True)


def test_hand_computed_value_with_scale_and_weight() -> None:
    pred = torch.zeros(1, 2, 2, 3)
    pred[0, :, 1, 2] = torch.tensor([1.0, 2.0])  # cell 1 * 3 + 2 = 5
    pred.requires_grad_(True)
    cells = [torch.tensor([0, 5])]
    targets = [torch.tensor([[2.0, 4.0], [4.0, 4.0]])]
    scale = torch.tensor([2.0, 4.0])
    # Normalised targets: cell 0 -> [1, 1] against pred [0, 0]: mean sq 1; cell 5 -> [2, 1] against [1, 2]: 1.
    # Sum 0.5 * 1 + 0.5 * 1 = 1, divided by max(2, 10) = 10, times 3.
    loss = imitation_loss(pred, cells, targets, scale, weight=3.0)
    assert loss.item() == pytest.approx(0.3, rel=1e-6)


def test_normaliser_is_the_kept_cell_count_above_ten() -> None:
    channels, ny, nx = 1, 4, 4
    pred = torch.zeros(2, channels, ny, nx, requires_grad=True)
    # 12 cells over two frames, each target 1 against 0: per cell 0.5; 12 kept > 10 -> mean 0.5.
    cells = [torch.arange(7), torch.arange(5)]
    targets = [torch.ones(7, 1), torch.ones(5, 1)]
    loss = imitation_loss(pred, cells, targets, torch.ones(1))
    assert loss.item() == pytest.approx(0.5, rel=1e-6)
    # 3 cells: the floor of 10 applies.
    few = imitation_loss(
        pred, [torch.arange(3), torch.arange(0)], [torch.ones(3, 1), torch.ones(0, 1)], torch.ones(1)
    )
    assert few.item() == pytest.approx(3 * 0.5 / 10, rel=1e-6)


def test_all_zero_teacher_cells_are_dropped_and_not_counted() -> None:
    pred = torch.full((1, 2, 4, 4), 1.0, requires_grad=True)
    cells = [torch.arange(12)]
    targets = [torch.zeros(12, 2)]
    targets[0][:11] = 1.0  # 11 kept (one zero cell), each pred == target: loss 0 there
    targets[0][3, 0] = 0.0  # partly zero: still kept
    loss = imitation_loss(pred, cells, targets, torch.ones(2))
    # Only cell 3 differs: 0.5 * mean([1, 0]) = 0.25, over 11 kept cells (the all-zero cell 11 is not counted).
    assert loss.item() == pytest.approx(0.25 / 11, rel=1e-6)
    loss.backward()
    assert pred.grad[0].flatten(1)[:, 11].abs().sum() == 0  # the dropped cell gets no gradient


def test_gradient_reaches_only_the_imitated_cells() -> None:
    pred = torch.randn(2, 3, 3, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    cells = [torch.tensor([1, 6]), torch.tensor([11])]
    targets = [torch.rand(2, 3) + 0.1, torch.rand(1, 3) + 0.1]
    imitation_loss(pred, cells, targets, torch.tensor([0.5, 1.0, 2.0])).backward()
    touched = pred.grad.abs().sum(dim=1).flatten(1) > 0  # (B, ny * nx)
    expected = torch.zeros_like(touched)
    expected[0, [1, 6]] = True
    expected[1, 11] = True
    assert torch.equal(touched, expected)


def test_no_cells_gives_a_zero_loss_attached_to_pred() -> None:
    pred = _pred(b=2)
    empty = [torch.zeros(0, dtype=torch.long)] * 2
    loss = imitation_loss(pred, empty, [torch.zeros(0, 2)] * 2, torch.ones(2))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() == 0
    # Cells present but every teacher feature zero: the same.
    zero = imitation_loss(pred, [torch.tensor([0, 1])] * 2, [torch.zeros(2, 2)] * 2, torch.ones(2))
    assert zero.item() == 0.0 and zero.grad_fn is not None


def test_zero_scale_channel_is_left_undivided() -> None:
    pred = _pred(channels=2)
    loss = imitation_loss(pred, [torch.tensor([0])], [torch.tensor([[0.0, 2.0]])], torch.tensor([0.0, 1.0]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.5 * 4 / 2 / 10, rel=1e-6)


def test_shapes_are_checked() -> None:
    pred = _pred(channels=2)
    with pytest.raises(ValueError, match="scale"):
        imitation_loss(pred, [torch.tensor([0])], [torch.ones(1, 2)], torch.ones(3))
    with pytest.raises(ValueError, match="targets"):
        imitation_loss(pred, [torch.tensor([0])], [torch.ones(1, 3)], torch.ones(2))
    with pytest.raises(ValueError, match="per frame"):
        imitation_loss(pred, [], [], torch.ones(2))
