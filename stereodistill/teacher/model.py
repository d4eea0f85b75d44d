"""The SECOND-style LiDAR teacher: points -> voxels -> sparse 3D backbone -> BEV backbone -> anchor head.

Its BEV output lies exactly on the shared anchor grid: the voxel size in x and y times the sparse backbone's
stride equals the grid's cell, and the voxel range's x/y extent equals the grid's (the grid contract in
docs/ARCHITECTURE.md). Inputs are project-frame points ``(N, F)``: x, y, z then ``F - 3`` features
(intensity by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from stereodistill.errors import InputError
from stereodistill.head.anchor_head import AnchorHead, HeadOutput
from stereodistill.head.anchors import AnchorGrid
from stereodistill.teacher.conv_algorithm import use_device_conv_algorithm
from stereodistill.teacher.settings import TeacherConfig
from stereodistill.teacher.sparse_backbone import BEVBackbone, SparseBackbone
from stereodistill.teacher.voxelize import Voxelizer


def bev_stride(config: TeacherConfig, grid: AnchorGrid) -> int:
    """The sparse backbone's x/y stride that puts its output on ``grid``; an error if none does."""
    vx, vy, _ = config.voxel_size
    if abs(vx - vy) > 1e-9:
        raise InputError(f"teacher voxel_size x and y must be equal, got {vx} and {vy}", "params.yaml")
    ratio = grid.bev_cell_size / vx
    stride = round(ratio)
    if abs(ratio - stride) > 1e-6 or stride < 1 or 2 ** round(math.log2(stride)) != stride:
        raise InputError(
            f"grid.bev_cell_size / teacher voxel size = {ratio:g} must be a power of two (1, 2, 4, ...)",
            "params.yaml",
        )
    return stride


class SecondTeacher(nn.Module):
    """SECOND on spconv 2 with the shared anchor head. ``forward(points) -> HeadOutput`` (dense)."""

    def __init__(self, config: TeacherConfig, grid: AnchorGrid) -> None:
        super().__init__()
        self.config = config
        self.grid = grid
        stride = bev_stride(config, grid)
        if config.sparse_extra_z_voxels < 0:
            raise InputError(
                f"teacher.model.sparse_extra_z_voxels must be >= 0, got {config.sparse_extra_z_voxels}",
                "params.yaml",
            )
        if config.last_down_z_padding not in (0, 1):
            raise InputError(
                f"teacher.model.last_down_z_padding must be 0 or 1, got {config.last_down_z_padding}",
                "params.yaml",
            )
        x0, y0, z0, x1, y1, z1 = grid.point_cloud_range
        self.voxelizer = Voxelizer(
            config.voxel_size,
            (x0, y0, z0, x1, y1, z1),
            config.point_features,
            config.max_points_per_voxel,
            config.max_voxels,
        )
        nz, ny, nx = self.voxelizer.spatial_shape
        self.sparse = SparseBackbone(
            config.point_features,
            (nz + config.sparse_extra_z_voxels, ny, nx),
            stride,
            config.sparse_channels,
            config.sparse_out_channels,
            config.last_down_z_padding,
        )
        if self.sparse.bev_shape != (grid.ny, grid.nx):
            raise InputError(
                f"teacher BEV map {self.sparse.bev_shape} does not match the grid ({grid.ny}, {grid.nx})"
            )
        if grid.ny % 2 or grid.nx % 2:
            raise InputError(
                f"the BEV backbone needs an even grid, got ny={grid.ny}, nx={grid.nx}", "params.yaml"
            )
        self.bev = BEVBackbone(
            self.sparse.bev_channels, config.bev_channels, config.bev_layers, config.bev_upsample_channels
        )
        self.head = AnchorHead(self.bev.out_channels, grid, num_tower_convs=0)
        use_device_conv_algorithm(self, "cpu")  # parameters start on the CPU; _apply follows later moves

    def _apply(self, fn, recurse=True):  # keeps the spconv algorithm in step with the device on .to()/.cuda()
        module = super()._apply(fn, recurse)
        device = next(self.parameters()).device
        use_device_conv_algorithm(self, device)
        return module

    def features(self, points: Sequence[Tensor]) -> Tensor:
        """BEV features ``(B, C, ny, nx)`` of a batch of point clouds (one ``(N_i, F)`` tensor per frame)."""
        return self.bev(self.sparse(self.voxelizer(points)))

    def forward(self, points: Sequence[Tensor]) -> HeadOutput:
        return self.head(self.features(points))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
