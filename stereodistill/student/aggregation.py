"""3D aggregation of the cost volume: two conv3d layers with a residual, then one PSMNet-style hourglass.

``(B, C_in, D, H, W) -> (B, C, D, H, W)`` with ``C = cost_channels``; GroupNorm throughout (as LIGA). The
hourglass goes down twice with stride-2 conv3d (C -> 2C -> 2C) and back up with transposed conv3d sized to the
skip tensors (so any D, H, W works), and its output is added to its input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv3d_norm(
    in_channels: int, out_channels: int, groups: int, stride: int = 1, relu: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(groups, out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Hourglass3d(nn.Module):
    """``(B, C, D, H, W) -> (B, C, D, H, W)``: down x2, up x2 with skips, output added to the input."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        wide = 2 * channels
        self.down1 = nn.Sequential(conv3d_norm(channels, wide, groups, 2), conv3d_norm(wide, wide, groups))
        self.down2 = nn.Sequential(conv3d_norm(wide, wide, groups, 2), conv3d_norm(wide, wide, groups))
        self.up2 = nn.ConvTranspose3d(wide, wide, 3, stride=2, padding=1, bias=False)
        self.up2_norm = nn.GroupNorm(groups, wide)
        self.up1 = nn.ConvTranspose3d(wide, channels, 3, stride=2, padding=1, bias=False)
        self.up1_norm = nn.GroupNorm(groups, channels)

    def forward(self, x: Tensor) -> Tensor:
        d1 = self.down1(x)
        d2 = self.down2(d1)
        u2 = torch.relu(self.up2_norm(self.up2(d2, output_size=d1.shape[-3:])) + d1)
        u1 = self.up1_norm(self.up1(u2, output_size=x.shape[-3:]))
        return torch.relu(u1 + x)


class CostAggregation(nn.Module):
    """Cost volume ``(B, C_in, D, H, W)`` -> aggregated cost features ``(B, channels, D, H, W)``."""

    def __init__(self, in_channels: int, channels: int, groups: int) -> None:
        super().__init__()
        self.dres0 = conv3d_norm(in_channels, channels, groups)
        self.dres1 = conv3d_norm(channels, channels, groups, relu=False)
        self.hourglass = Hourglass3d(channels, groups)

    def forward(self, volume: Tensor) -> Tensor:
        x = self.dres0(volume)
        x = torch.relu(self.dres1(x) + x)
        return self.hourglass(x)
