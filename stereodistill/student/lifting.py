"""Frustum -> voxel lifting (LIGA-Stereo's cost-volume-to-3D-volume transform) on the anchor grid.

Voxels: the grid's BEV cells (``nx`` x ``ny`` of ``bev_cell_size``) times ``voxel_z`` equal height cells over the
grid's z range; voxel ``(iz, iy, ix)`` is centred at the project-frame point

    x = x_min + (ix + 0.5) * cell,  y = y_min + (iy + 0.5) * cell,  z = z_min + (iz + 0.5) * (z_max - z_min) / voxel_z

Each centre goes project -> rect -> ``P2`` (per sample) -> image pixel ``(u, v)`` and depth ``d`` (third
homogeneous coordinate, as ``Calibration.rect_to_image``), then to cost-volume coordinates

    j = u / s,   i = v / s   (feature pixel (i, j) is centred on image pixel (s i, s j)),
    p = (d - d_0) / step     (exact plane index: plane p sits at d_0 + p * step)

and ``F.grid_sample`` (trilinear, ``align_corners=True``: normalised -1 / +1 are the centres of the first / last
pixel and plane) reads the aggregated cost features there. LIGA instead normalises depth linearly over
``[depth_min, depth_max]``, which is off by up to half a plane; here the plane index is exact. A voxel is valid
when ``d > 0`` and ``0 <= j <= Wf-1``, ``0 <= i <= Hf-1``, ``0 <= p <= D-1`` (between the outer pixel and plane
centres); invalid voxels are zeroed. The semantic feature is sampled bilinearly at ``(i, j)`` and weighted by the
(detached) depth probability sampled at ``(i, j, p)`` (LIGA). Output: ``(B, C_cost + C_sem, Z, ny, nx)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stereodistill.geometry.frames import project_to_rect
from stereodistill.head.anchors import AnchorGrid
from stereodistill.student.settings import StudentConfig


def voxel_centres(grid: AnchorGrid, voxel_z: int) -> Tensor:
    """Voxel centres ``(Z, ny, nx, 3)`` float64 in the project frame (see the module docstring)."""
    x0, y0, z0, _, _, z1 = grid.point_cloud_range
    cell = grid.bev_cell_size
    f64 = torch.float64
    xs = x0 + (torch.arange(grid.nx, dtype=f64) + 0.5) * cell
    ys = y0 + (torch.arange(grid.ny, dtype=f64) + 0.5) * cell
    zs = z0 + (torch.arange(voxel_z, dtype=f64) + 0.5) * ((z1 - z0) / voxel_z)
    z, y, x = torch.meshgrid(zs, ys, xs, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def plane_depths(config: StudentConfig, device: torch.device | str | None = None) -> Tensor:
    """Plane depths ``(D,)`` float32: ``depth_min + (i + 0.5) * plane_step`` (interval centres, as LIGA)."""
    i = torch.arange(config.num_planes, dtype=torch.float64)
    return (config.depth_min + (i + 0.5) * config.plane_step).to(device=device, dtype=torch.float32)


def volume_coordinates(
    centres: Tensor, P2: Tensor, stride: int, plane_depths: Tensor
) -> tuple[Tensor, Tensor]:
    """Cost-volume coordinates ``(B, Z, Y, X, 3)`` = ``(j, i, p)`` of every voxel centre, and its depth ``(B, Z, Y, X)``.

    ``centres (Z, Y, X, 3)`` project frame, ``P2 (B, 3, 4)``, planes ``(D,)`` equally spaced. Computed in float64.
    """
    rect = project_to_rect(centres.to(torch.float64))  # (Z, Y, X, 3)
    P = P2.to(device=rect.device, dtype=torch.float64)
    hom = torch.einsum("brc,zyxc->bzyxr", P[:, :, :3], rect) + P[:, None, None, None, :, 3]
    depth = hom[..., 2]
    u = hom[..., 0] / depth
    v = hom[..., 1] / depth
    planes = plane_depths.to(torch.float64)
    p = (depth - planes[0]) / (planes[1] - planes[0])
    return torch.stack([u / stride, v / stride, p], dim=-1), depth


def sampling_grid(coords: Tensor, depth: Tensor, volume_shape: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """``(j, i, p)`` coordinates -> ``grid_sample`` grid ``(B, Z, Y, X, 3)`` float32 and validity ``(B, 1, Z, Y, X)``.

    ``volume_shape = (D, Hf, Wf)``; ``align_corners=True`` normalisation.
    """
    d, h, w = volume_shape
    sizes = coords.new_tensor([w, h, d])
    valid = (depth > 0) & ((coords >= 0) & (coords <= sizes - 1)).all(dim=-1)
    normalised = 2.0 * coords / (sizes - 1).clamp(min=1) - 1.0
    normalised = torch.where(valid[..., None], normalised, torch.full_like(normalised, -2.0))  # no NaN/inf
    return normalised.float(), valid.unsqueeze(1).float()


class VoxelLifter(nn.Module):
    """Aggregated cost features, plane logits and semantic features -> masked voxel features on the grid."""

    def __init__(self, grid: AnchorGrid, voxel_z: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.register_buffer("centres", voxel_centres(grid, voxel_z), persistent=False)

    def forward(
        self, cost_features: Tensor, depth_logits: Tensor, semantic: Tensor, P2: Tensor, plane_depths: Tensor
    ) -> Tensor:
        """``cost_features (B, C, D, Hf, Wf)``, ``depth_logits (B, D, Hf, Wf)``, ``semantic (B, Cs, Hf, Wf)``,
        ``P2 (B, 3, 4)`` -> ``(B, C + Cs, Z, ny, nx)``."""
        b, _, d, h, w = cost_features.shape
        coords, depth = volume_coordinates(self.centres, P2, self.stride, plane_depths)
        grid, valid = sampling_grid(coords, depth, (d, h, w))
        grid = grid.to(cost_features.dtype)
        valid = valid.to(cost_features.dtype)
        geometry = F.grid_sample(
            cost_features, grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        probability = torch.softmax(depth_logits.detach(), dim=1).unsqueeze(1)
        voxel_probability = F.grid_sample(
            probability, grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        z, y, x = grid.shape[1:4]
        image_grid = grid[..., :2].reshape(b, z * y, x, 2)
        sem = F.grid_sample(semantic, image_grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        sem = sem.view(b, semantic.shape[1], z, y, x) * voxel_probability
        return torch.cat([geometry, sem], dim=1) * valid
