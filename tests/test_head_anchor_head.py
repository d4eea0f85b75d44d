"""AnchorHead: shapes, initialisation, per-anchor layout, and a tiny end-to-end overfit."""

from __future__ import annotations

import math

import pytest
import torch
from grids import small_grid

from stereodistill.head.anchor_head import AnchorHead, HeadOutput
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import TargetAssigner
from stereodistill.head.decode import decode_frame
from stereodistill.head.losses import detection_losses
from stereodistill.head.settings import DecodeSettings


@pytest.fixture(scope="module")
def grid() -> AnchorGrid:
    return small_grid(12.0, 4.0)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"num_tower_convs": 2, "tower_channels": 32, "norm": "group", "norm_groups": 8},
        {"num_tower_convs": 1, "norm": "batch"},
    ],
)
def test_output_shapes(grid, options):
    head = AnchorHead(16, grid, **options)
    out = head(torch.randn(2, 16, grid.ny, grid.nx))
    a = grid.anchors_per_cell
    assert isinstance(out, HeadOutput)
    assert out.cls.shape == (2, a * 3, 8, 12)
    assert out.box.shape == (2, a * 7, 8, 12)
    assert out.dir.shape == (2, a * 2, 8, 12)
    flat = head.flatten(out)
    n = grid.num_anchors
    assert flat.cls.shape == (2, n, 3) and flat.box.shape == (2, n, 7) and flat.dir.shape == (2, n, 2)


def test_second_style_head_uses_1x1_convs_and_liga_style_3x3(grid):
    second = AnchorHead(16, grid)
    assert second.conv_cls.kernel_size == (1, 1) and len(second.cls_tower) == 0
    liga = AnchorHead(16, grid, num_tower_convs=2, norm_groups=8)
    assert liga.conv_cls.kernel_size == (3, 3) and liga.conv_box.kernel_size == (3, 3)
    assert liga.conv_dir.kernel_size == (1, 1)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in liga.modules()) == 4


def test_initialisation(grid):
    torch.manual_seed(0)
    head = AnchorHead(64, grid)
    torch.testing.assert_close(head.conv_cls.bias, torch.full_like(head.conv_cls.bias, -math.log(99.0)))
    assert torch.all(head.conv_box.bias == 0)
    assert head.conv_box.weight.std().item() == pytest.approx(0.001, rel=0.1)
    scores = torch.sigmoid(head(torch.zeros(1, 64, grid.ny, grid.nx)).cls)
    torch.testing.assert_close(scores, torch.full_like(scores, 0.01))
    custom = AnchorHead(64, grid, cls_weight_std=0.1, box_weight_std=0.02)
    assert custom.conv_cls.weight.std().item() == pytest.approx(0.1, rel=0.1)
    assert custom.conv_box.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_flatten_follows_the_grid_anchor_order(grid):
    """Channel a*C + k of the class conv is logit k of anchor a = c*R + r in every cell."""
    head = AnchorHead(4, grid)
    with torch.no_grad():
        head.conv_cls.weight.zero_()
        head.conv_cls.bias.copy_(torch.arange(grid.anchors_per_cell * grid.num_classes, dtype=torch.float32))
    flat = head.flatten(head(torch.zeros(1, 4, grid.ny, grid.nx)))
    c_total, r_total = grid.num_classes, grid.num_rotations
    for iy, ix, c, r in [(0, 0, 0, 0), (3, 7, 2, 1), (7, 11, 1, 0)]:
        a = c * r_total + r
        k = grid.anchor_index(iy, ix, c, r)
        assert flat.cls[0, k].tolist() == [a * c_total + j for j in range(c_total)]


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_leaky_box_tower_still_learns_where_every_relu_is_off(grid, slope):
    """The dead-tower failure: every post-norm value of the regression tower negative (GN bias -10).

    A ReLU tower passes no gradient to its conv then, so the box output is the output conv's bias forever; the
    leaky tower passes ``slope`` of it. The classification tower stays ReLU either way.
    """
    torch.manual_seed(0)
    head = AnchorHead(16, grid, num_tower_convs=1, norm_groups=8, box_tower_negative_slope=slope)
    assert isinstance(head.cls_tower[2], torch.nn.ReLU)
    assert isinstance(head.box_tower[2], torch.nn.LeakyReLU if slope else torch.nn.ReLU)
    with torch.no_grad():
        head.box_tower[1].bias.fill_(-10.0)
    box = head(torch.randn(2, 16, grid.ny, grid.nx)).box
    (box * torch.randn_like(box)).sum().backward()
    grad = head.box_tower[0].weight.grad
    assert grad is not None
    if slope:
        assert grad.abs().max() > 0
        assert box.std() > 0
    else:
        assert torch.count_nonzero(grad) == 0
        torch.testing.assert_close(box, head.conv_box.bias.view(1, -1, 1, 1).expand_as(box))


def test_bad_arguments_and_inputs(grid):
    with pytest.raises(ValueError, match="divisible by norm_groups"):
        AnchorHead(16, grid, num_tower_convs=2, tower_channels=20, norm_groups=8)
    with pytest.raises(ValueError, match="norm must be"):
        AnchorHead(16, grid, num_tower_convs=2, norm="layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_tower_convs"):
        AnchorHead(16, grid, num_tower_convs=-1)
    with pytest.raises(ValueError, match=r"box_tower_negative_slope must be in \[0, 1\), got 1.0"):
        AnchorHead(16, grid, num_tower_convs=1, norm_groups=8, box_tower_negative_slope=1.0)
    head = AnchorHead(16, grid)
    with pytest.raises(ValueError, match=r"expected BEV features of shape \(B, 16, 8, 12\)"):
        head(torch.zeros(1, 16, 8, 13))


def test_overfits_one_scene_and_decodes_its_boxes(grid):
    """Head + assigner + losses + decoding agree: a couple of hundred steps on one scene recover its GT boxes."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (10x on a loaded 2-core machine)
    try:
        _overfit_and_decode(grid)
    finally:
        torch.set_num_threads(threads)


def _overfit_and_decode(grid: AnchorGrid) -> None:
    gt = torch.tensor([[4.3, -1.2, -0.9, 4.1, 1.7, 1.5, 2.9], [8.6, 2.4, -0.8, 0.7, 0.6, 1.8, -1.2]])
    gt_classes = torch.tensor([0, 1])
    targets = TargetAssigner(grid).assign(gt, gt_classes)
    features = torch.randn(1, 8, grid.ny, grid.nx)
    head = AnchorHead(8, grid, num_tower_convs=1, tower_channels=16, norm_groups=4)
    optimiser = torch.optim.Adam(head.parameters(), lr=0.02)
    first = None
    for _ in range(150):
        out = head.flatten(head(features))
        loss = detection_losses(
            out.cls,
            out.box,
            out.dir,
            targets.labels[None],
            targets.box_targets[None],
            targets.dir_targets[None],
        )["total"]
        first = loss.item() if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.1 * first
    head.eval()
    with torch.no_grad():
        out = head.flatten(head(features))
    dets = decode_frame(
        out.cls[0], out.box[0], out.dir[0], grid.anchors(), DecodeSettings(score_threshold=0.3)
    )
    assert sorted(dets.labels.tolist()) == [0, 1]
    for box, label in zip(dets.boxes, dets.labels, strict=True):
        target = gt[gt_classes == label][0]
        assert (box[:6] - target[:6]).abs().max().item() < 0.1
        heading_error = (box[6] - target[6] + math.pi) % (2 * math.pi) - math.pi
        assert abs(heading_error.item()) < 0.05
