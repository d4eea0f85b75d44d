"""Dense anchor head on a BEV feature map (SECOND's AnchorHeadSingle / LIGA-Stereo's DetHead).

Outputs for a BEV map ``(B, in_channels, ny, nx)`` on the grid, with ``A = C * R`` anchors per cell:

- ``cls (B, A * C, ny, nx)``: every anchor carries ``C`` class logits (one per class, sigmoid each, as OpenPCDet),
  although assignment only ever makes an anchor positive for its own class;
- ``box (B, A * 7, ny, nx)``: residual codes (:mod:`stereodistill.head.box_coder`);
- ``dir (B, A * 2, ny, nx)``: direction-bin logits.

Channel ``a * K + k`` belongs to anchor ``a = c * R + r`` of the cell (see :mod:`stereodistill.head.anchors`);
:meth:`AnchorHead.flatten` gives per-anchor tensors in the grid's anchor order.

Towers: ``num_tower_convs = 0`` is SECOND (1x1 output convs straight on the features); ``> 0`` is LIGA-Stereo:
separate classification and regression towers of ``num_tower_convs`` x (3x3 conv + norm + ReLU), 3x3 cls/box
output convs, and a 1x1 direction conv on the classification tower.

``box_tower_negative_slope > 0`` makes the regression tower's activations leaky. The regression loss reaches the
tower only at positive anchors (well under 1 % of the cells), while its GroupNorm statistics come from the whole
map. On a student trained from scratch the backbone's drift can push every pre-activation at the positives below
zero; with a plain ReLU no gradient then reaches the tower again and the box output is the bias alone
(docs/RESULTS.md, "the dead regression tower"). The classification tower is supervised at every cell and keeps ReLU.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

from torch import Tensor, nn

from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.box_coder import CODE_SIZE, NUM_DIR_BINS

PRIOR_PROBABILITY = 0.01


class HeadOutput(NamedTuple):
    """Head outputs, dense ``(B, A*K, ny, nx)`` or per-anchor ``(B, N, K)`` with ``K = C, 7, 2``."""

    cls: Tensor
    box: Tensor
    dir: Tensor


def _tower(
    in_channels: int,
    channels: int,
    num_convs: int,
    norm: Literal["group", "batch"],
    groups: int,
    negative_slope: float = 0.0,
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers.append(nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=False))
        layers.append(nn.GroupNorm(groups, channels) if norm == "group" else nn.BatchNorm2d(channels))
        layers.append(
            nn.LeakyReLU(negative_slope, inplace=True) if negative_slope > 0 else nn.ReLU(inplace=True)
        )
    return nn.Sequential(*layers)


class AnchorHead(nn.Module):
    """Anchor head for ``grid``; see the module docstring for layout and tower options.

    Init: classification bias ``-log((1 - 0.01) / 0.01)`` (prior 0.01), box weights ``N(0, box_weight_std)`` with
    zero bias, classification weights ``N(0, cls_weight_std)`` when given (else PyTorch's default).
    """

    def __init__(
        self,
        in_channels: int,
        grid: AnchorGrid,
        num_tower_convs: int = 0,
        tower_channels: int | None = None,
        norm: Literal["group", "batch"] = "group",
        norm_groups: int = 32,
        box_weight_std: float = 0.001,
        cls_weight_std: float | None = None,
        box_tower_negative_slope: float = 0.0,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if num_tower_convs < 0:
            raise ValueError(f"num_tower_convs must be >= 0, got {num_tower_convs}")
        if norm not in ("group", "batch"):
            raise ValueError(f"norm must be 'group' or 'batch', got {norm!r}")
        if not 0.0 <= box_tower_negative_slope < 1.0:
            raise ValueError(f"box_tower_negative_slope must be in [0, 1), got {box_tower_negative_slope}")
        channels = in_channels if tower_channels is None else tower_channels
        if num_tower_convs and norm == "group" and channels % norm_groups:
            raise ValueError(f"tower_channels ({channels}) must be divisible by norm_groups ({norm_groups})")
        self.grid = grid
        self.in_channels = in_channels
        a, c = grid.anchors_per_cell, grid.num_classes
        self.cls_tower = _tower(in_channels, channels, num_tower_convs, norm, norm_groups)
        self.box_tower = _tower(
            in_channels, channels, num_tower_convs, norm, norm_groups, box_tower_negative_slope
        )
        head_in = channels if num_tower_convs else in_channels
        k = 3 if num_tower_convs else 1
        self.conv_cls = nn.Conv2d(head_in, a * c, k, padding=k // 2)
        self.conv_box = nn.Conv2d(head_in, a * CODE_SIZE, k, padding=k // 2)
        self.conv_dir = nn.Conv2d(head_in, a * NUM_DIR_BINS, 1)
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))
        if cls_weight_std is not None:
            nn.init.normal_(self.conv_cls.weight, std=cls_weight_std)
        nn.init.normal_(self.conv_box.weight, std=box_weight_std)
        nn.init.zeros_(self.conv_box.bias)

    def forward(self, features: Tensor) -> HeadOutput:
        """BEV features ``(B, in_channels, ny, nx)`` -> dense :class:`HeadOutput`."""
        expected = (self.in_channels, self.grid.ny, self.grid.nx)
        if features.dim() != 4 or tuple(features.shape[1:]) != expected:
            raise ValueError(
                f"expected BEV features of shape (B, {expected[0]}, {expected[1]}, {expected[2]}), got {tuple(features.shape)}"
            )
        cls_features = self.cls_tower(features)
        box_features = self.box_tower(features)
        return HeadOutput(
            self.conv_cls(cls_features), self.conv_box(box_features), self.conv_dir(cls_features)
        )

    def flatten(self, output: HeadOutput) -> HeadOutput:
        """Dense outputs -> per-anchor ``cls (B, N, C)``, ``box (B, N, 7)``, ``dir (B, N, 2)`` in anchor order."""
        g = self.grid
        return HeadOutput(
            g.flatten_dense(output.cls, g.num_classes),
            g.flatten_dense(output.box, CODE_SIZE),
            g.flatten_dense(output.dir, NUM_DIR_BINS),
        )
