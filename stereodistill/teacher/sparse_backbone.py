"""SECOND's sparse 3D backbone (spconv 2) and the height compression to a BEV map.

Layout, for ``channels = (c0, c1, ..., cn)`` and ``n`` = log2 of the BEV stride::

    conv_input   SubM3d(F -> c0) + BN + ReLU
    conv1        SubM3d(c0 -> c0)
    conv{k}      SparseConv3d(c_{k-2} -> c_{k-1}, k3, stride 2, pad 1) + 2 x SubM3d   for k = 2..n+1
    conv_out     SparseConv3d(c_n -> out, k(3,1,1), stride (2,1,1), no pad)           (height only)

``last_down_z_padding`` sets the z padding of the last strided stage (default 1; OpenPCDet's VoxelBackBone8x
pads its conv4 by (0, 1, 1), i.e. 0).

Every convolution is followed by BatchNorm1d and ReLU. Strided stages halve x, y and z; ``conv_out`` then
shrinks the height once more. The dense result ``(B, out, D, ny, nx)`` is reshaped to
``(B, out * D, ny, nx)`` (channel = c * D + z), OpenPCDet's HeightCompression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import spconv.pytorch as spconv
import torch
from torch import Tensor, nn

from stereodistill.teacher.voxelize import VoxelBatch

BN_EPS, BN_MOMENTUM = 1e-3, 0.01


def _block(conv: nn.Module, channels: int) -> spconv.SparseSequential:
    return spconv.SparseSequential(
        conv, nn.BatchNorm1d(channels, eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU(inplace=True)
    )


def _subm(cin: int, cout: int, key: str) -> spconv.SparseSequential:
    return _block(spconv.SubMConv3d(cin, cout, 3, padding=1, bias=False, indice_key=key), cout)


def _down(cin: int, cout: int, key: str, z_padding: int = 1) -> spconv.SparseSequential:
    conv = spconv.SparseConv3d(cin, cout, 3, stride=2, padding=(z_padding, 1, 1), bias=False, indice_key=key)
    return _block(conv, cout)


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class SparseBackbone(nn.Module):
    """Voxels -> BEV features ``(B, bev_channels, ny / stride, nx / stride)``.

    ``spatial_shape`` is the sparse tensor's grid ``(nz, ny, nx)``; ``bev_stride`` (a power of two) the ratio of
    the anchor-grid cell to the voxel size in x and y; ``last_down_z_padding`` the z padding of the last strided
    stage (0 or 1).
    """

    def __init__(
        self,
        in_features: int,
        spatial_shape: Sequence[int],
        bev_stride: int,
        channels: Sequence[int] = (16, 32, 64),
        out_channels: int = 64,
        last_down_z_padding: int = 1,
    ) -> None:
        super().__init__()
        if last_down_z_padding not in (0, 1):
            raise ValueError(f"last_down_z_padding must be 0 or 1, got {last_down_z_padding}")
        downsamples = round(math.log2(bev_stride))
        if bev_stride < 1 or 2**downsamples != bev_stride:
            raise ValueError(f"bev_stride must be a power of two, got {bev_stride}")
        if len(channels) != downsamples + 1:
            raise ValueError(
                f"need {downsamples + 1} stage channels for stride {bev_stride}, got {list(channels)}"
            )
        nz, ny, nx = (int(s) for s in spatial_shape)
        if ny % bev_stride or nx % bev_stride:
            raise ValueError(f"voxel grid {ny} x {nx} (y, x) is not divisible by the BEV stride {bev_stride}")
        self.spatial_shape = (nz, ny, nx)
        self.conv_input = _subm(in_features, channels[0], "subm0")
        self.conv1 = _subm(channels[0], channels[0], "subm0")
        stages = []
        z = nz
        for k in range(1, downsamples + 1):
            z_padding = last_down_z_padding if k == downsamples else 1
            stages.append(
                spconv.SparseSequential(
                    _down(channels[k - 1], channels[k], f"down{k}", z_padding),
                    _subm(channels[k], channels[k], f"subm{k}"),
                    _subm(channels[k], channels[k], f"subm{k}"),
                )
            )
            z = _out_size(z, 3, 2, z_padding)
        self.stages = nn.ModuleList(stages)
        if z < 3:
            raise ValueError(f"the voxel grid is too thin ({nz} voxels high) for the height compression")
        self.conv_out = _block(
            spconv.SparseConv3d(
                channels[-1], out_channels, (3, 1, 1), stride=(2, 1, 1), bias=False, indice_key="out"
            ),
            out_channels,
        )
        self.out_depth = _out_size(z, 3, 2, 0)
        self.bev_channels = out_channels * self.out_depth
        self.bev_shape = (ny // bev_stride, nx // bev_stride)

    def forward(self, voxels: VoxelBatch) -> Tensor:
        x = spconv.SparseConvTensor(
            voxels.features, voxels.coords, list(self.spatial_shape), voxels.batch_size
        )
        x = self.conv1(self.conv_input(x))
        for stage in self.stages:
            x = stage(x)
        dense: Tensor = self.conv_out(x).dense()  # (B, C, D, ny, nx)
        b, c, d, h, w = dense.shape
        return dense.reshape(b, c * d, h, w)


class BEVBackbone(nn.Module):
    """SECOND's 2D backbone: a stride-1 block and a stride-2 block, each upsampled to stride 1 and concatenated.

    ``(B, in_channels, ny, nx)`` -> ``(B, 2 * upsample_channels, ny, nx)``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (64, 128),
        layers: Sequence[int] = (3, 3),
        upsample_channels: int = 64,
    ) -> None:
        super().__init__()

        def conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ]

        c0, c1 = channels
        self.block0 = nn.Sequential(
            *conv(in_channels, c0), *[m for _ in range(layers[0]) for m in conv(c0, c0)]
        )
        self.block1 = nn.Sequential(*conv(c0, c1, 2), *[m for _ in range(layers[1]) for m in conv(c1, c1)])
        self.up0 = nn.Sequential(
            nn.Conv2d(c0, upsample_channels, 1, bias=False),
            nn.BatchNorm2d(upsample_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )
        self.up1 = nn.Sequential(
            nn.ConvTranspose2d(c1, upsample_channels, 2, stride=2, bias=False),
            nn.BatchNorm2d(upsample_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )
        self.out_channels = 2 * upsample_channels

    def forward(self, x: Tensor) -> Tensor:
        x0 = self.block0(x)
        x1 = self.block1(x0)
        return torch.cat([self.up0(x0), self.up1(x1)], dim=1)
