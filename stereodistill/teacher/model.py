"""The SECOND-style LiDAR teacher: points -> voxels -> sparse 3D backbone -> BEV backbone -> anchor head.

Its BEV output lies exactly on the shared anchor grid: the voxel size in x and y times the sparse backbone's
stride equals the grid's cell, and the voxel range's x/y extent equals the grid's (the grid contract in
docs/ARCHITECTURE.md). Inputs are project-frame points ``(N, F)``: x, y, z then ``F - 3`` features
(intensity by default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from stereodistill.errors import InputError
from stereodistill.head.anchor_head import AnchorHead, HeadOutput
from stereodistill.head.anchors import AnchorGrid
from stereodistill.teacher.conv_algorithm import use_device_conv_algorithm
from stereodistill.teacher.sparse_backbone import BEVBackbone, SparseBackbone
from stereodistill.teacher.voxelize import Voxelizer


@dataclass(frozen=True)
class TeacherConfig:
    """Network settings of the teacher (the ``teacher.model`` section of params.yaml)."""

    point_features: int = 4  # x, y, z, intensity; 3 = xyz only (LIGA's teacher)
    voxel_size: tuple[float, float, float] = (0.1, 0.1, 0.2)
    max_points_per_voxel: int = 5
    max_voxels: int = 40000
    sparse_channels: tuple[int, ...] = (16, 32, 64)
    sparse_out_channels: int = 64
    bev_channels: tuple[int, int] = (64, 128)
    bev_layers: tuple[int, int] = (3, 3)
    bev_upsample_channels: int = 64
    # Options that let the network be OpenPCDet's SECOND exactly (stereodistill.teacher.import_openpcdet). Their
    # defaults keep the project's own teacher; to_dict() writes them only when not at the default, so configs
    # stored before they existed still load and compare equal.
    sparse_extra_z_voxels: int = 0  # OpenPCDet: 1 (sparse tensor 41 voxels high for a 40-voxel z range)
    last_down_z_padding: int = 1  # OpenPCDet: 0 (VoxelBackBone8x conv4 pads (0, 1, 1))

    @classmethod
    def from_params(cls, section: Mapping[str, Any], where: str = "teacher.model") -> TeacherConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(section) - known)
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(f'{where}.{k}' for k in unknown)}", "params.yaml")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        for key in _OPTIONAL_FIELDS:
            if out[key] == self.__dataclass_fields__[key].default:
                del out[key]
        return out


# Fields added after the first checkpoints were written: left out of to_dict() while at their defaults.
_OPTIONAL_FIELDS = ("sparse_extra_z_voxels", "last_down_z_padding")


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
