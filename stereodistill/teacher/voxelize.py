"""Points -> voxels with spconv's ``PointToVoxel`` and mean voxel features (SECOND's MeanVFE)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from spconv.pytorch.utils import PointToVoxel
from torch import Tensor


@dataclass(frozen=True)
class VoxelBatch:
    """Voxels of a batch: ``features (V, F)`` mean point features, ``coords (V, 4)`` int32 as
    ``(batch index, iz, iy, ix)``, ``spatial_shape`` ``(nz, ny, nx)`` and ``batch_size``."""

    features: Tensor
    coords: Tensor
    spatial_shape: tuple[int, int, int]
    batch_size: int


class Voxelizer:
    """Voxelises project-frame points ``(N, F)`` (x, y, z, then optional features) on their device.

    ``voxel_size`` and ``point_cloud_range`` are in ``x, y, z`` order (metres); points outside the range are
    dropped; at most ``max_points_per_voxel`` points are averaged per voxel and at most ``max_voxels`` voxels
    are kept per frame (spconv keeps the first ones met, so the order of points decides which).

    A frame without points never reaches ``PointToVoxel`` (spconv's CUDA kernel refuses a zero-size launch): it
    contributes no voxels, exactly what the CPU generator returns for it. A batch without any voxel gets one
    all-zero voxel so that the sparse network still runs and every frame gets a full output map.
    """

    def __init__(
        self,
        voxel_size: Sequence[float],
        point_cloud_range: Sequence[float],
        num_point_features: int,
        max_points_per_voxel: int,
        max_voxels: int,
    ) -> None:
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.point_cloud_range = tuple(float(v) for v in point_cloud_range)
        self.num_point_features = num_point_features
        self.max_points_per_voxel = max_points_per_voxel
        self.max_voxels = max_voxels
        extent = [self.point_cloud_range[i + 3] - self.point_cloud_range[i] for i in range(3)]
        nx, ny, nz = (round(e / v) for e, v in zip(extent, self.voxel_size, strict=True))
        self.spatial_shape = (nz, ny, nx)
        self._generators: dict[torch.device, PointToVoxel] = {}

    def _generator(self, device: torch.device) -> PointToVoxel:
        if device not in self._generators:
            self._generators[device] = PointToVoxel(
                vsize_xyz=list(self.voxel_size),
                coors_range_xyz=list(self.point_cloud_range),
                num_point_features=self.num_point_features,
                max_num_voxels=self.max_voxels,
                max_num_points_per_voxel=self.max_points_per_voxel,
                device=device,
            )
        return self._generators[device]

    def __call__(self, points: Sequence[Tensor]) -> VoxelBatch:
        """``points``: one ``(N_i, F)`` float tensor per frame, all on the same device."""
        features, coords = [], []
        for b, pts in enumerate(points):
            if pts.dim() != 2 or pts.shape[1] != self.num_point_features:
                raise ValueError(
                    f"frame {b}: expected points (N, {self.num_point_features}), got {tuple(pts.shape)}"
                )
            if pts.shape[0] == 0:
                features.append(pts.new_zeros(0, self.num_point_features, dtype=torch.float32))
                coords.append(torch.zeros(0, 4, dtype=torch.int32, device=pts.device))
                continue
            voxels, zyx, counts = self._generator(pts.device)(pts.float().contiguous())
            mean = voxels.sum(dim=1) / counts.clamp(min=1).to(voxels.dtype)[:, None]
            features.append(mean)
            batch_index = torch.full((zyx.shape[0], 1), b, dtype=torch.int32, device=zyx.device)
            coords.append(torch.cat([batch_index, zyx.int()], dim=1))
        features_all, coords_all = torch.cat(features), torch.cat(coords)
        if coords_all.shape[0] == 0:
            # spconv cannot run on zero voxels; one all-zero voxel in a corner stands for "nothing seen".
            features_all = features_all.new_zeros(1, self.num_point_features)
            coords_all = coords_all.new_zeros(1, 4)
        return VoxelBatch(features_all, coords_all, self.spatial_shape, len(points))
