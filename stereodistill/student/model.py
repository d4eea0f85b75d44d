"""The LIGA-Stereo-style stereo student: stereo pair + calibration -> BEV features -> the shared anchor head.

Pipeline (shapes for batch ``B``, feature stride ``s``, ``Hf = ceil(H/s)``, ``Wf = ceil(W/s)``, ``D`` planes)::

    left, right (B, 3, H, W) in [0, 1] --2D trunk (shared, backbone.py)--> stereo (B, Cs, Hf, Wf), semantic (left)
    plane sweep (cost_volume.py)       -> (B, 2Cs or G, D, Hf, Wf)
    CostAggregation (3D hourglass)     -> cost features (B, Cc, D, Hf, Wf)
    DepthHead                          -> depth logits (B, D, Hf, Wf); soft-argmin depth (B, Hf, Wf)
    VoxelLifter (lifting.py)           -> (B, Cc + Csem, voxel_z, ny, nx)
    conv3d + GN + ReLU, avg-pool z     -> volume features (B, Cv, voxel_z / z_pool, ny, nx)
    height compression                 -> (B, Cv * Z', ny, nx), channel c * Z' + z
    BEVBackbone (conv + 2D hourglass)  -> BEV features (B, bev_channels, ny, nx)
    AnchorHead (2 GN towers, LIGA)     -> HeadOutput on the grid
    imitation adapter (1x1 conv)       -> (B, imitation_channels, ny, nx), only when imitation_channels > 0

Calibrations differ per sample: pass ``P2 (B, 3, 4)`` and ``baseline (B,)`` (:func:`calibration_tensors`), both
for the images as given (scale ``P2`` with the images when resizing). All images of a batch share one size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from stereodistill.geometry.calibration import Calibration
from stereodistill.head.anchor_head import AnchorHead, HeadOutput
from stereodistill.head.anchors import AnchorGrid
from stereodistill.student.aggregation import CostAggregation
from stereodistill.student.backbone import build_feature_extractor
from stereodistill.student.cost_volume import build_cost_volume, plane_disparities
from stereodistill.student.depth import DepthHead, soft_argmin_depth
from stereodistill.student.lifting import VoxelLifter, plane_depths
from stereodistill.student.settings import StudentConfig

# The stereo trunk: what turns a stereo pair into depth. Depth pretraining (student/pretrain.py) trains these
# modules alone, and a student starts from their pretrained weights.
TRUNK_MODULES = ("features", "aggregation", "depth_head")


class StereoOutput(NamedTuple):
    cost_features: Tensor  # (B, cost_channels, D, Hf, Wf)
    depth_logits: Tensor  # (B, D, Hf, Wf)
    semantic: Tensor  # (B, semantic_channels, Hf, Wf), left image


class StudentOutput(NamedTuple):
    head: HeadOutput  # dense (B, A*K, ny, nx)
    depth_logits: Tensor  # (B, D, Hf, Wf)
    depth: Tensor  # (B, Hf, Wf) soft-argmin depth, metres
    volume_features: Tensor  # (B, volume_channels, voxel_z / z_pool, ny, nx)
    bev_features: Tensor  # (B, bev_channels, ny, nx)
    imitation_features: Tensor | None = None  # (B, imitation_channels, ny, nx); None without the adapter


def calibration_tensors(
    calibs: Sequence[Calibration], device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """``P2 (B, 3, 4)`` and ``baseline (B,)`` float32 tensors of a batch of calibrations."""
    P2 = torch.as_tensor(np.stack([c.P2 for c in calibs]), dtype=torch.float32, device=device)
    baseline = torch.tensor([c.baseline for c in calibs], dtype=torch.float32, device=device)
    return P2, baseline


def images_to_tensor(images: Sequence[np.ndarray], device: torch.device | str | None = None) -> Tensor:
    """uint8 RGB images ``(H, W, 3)`` (one size) -> float ``(B, 3, H, W)`` in [0, 1]."""
    stacked = np.stack([np.ascontiguousarray(im) for im in images])
    # NCHW-contiguous: a channels-last input sends CPU convolutions to a oneDNN backward that corrupts the heap
    # (torch 2.13); the NCHW path is fine.
    return torch.as_tensor(stacked, device=device).permute(0, 3, 1, 2).contiguous().float().div_(255.0)


class BEVBackbone(nn.Module):
    """conv3x3 + GN + ReLU, then a 2D hourglass (down x2, up x2 with skips); LIGA's HgBEVBackbone shape."""

    def __init__(self, in_channels: int, channels: int, groups: int) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.GroupNorm(groups, cout),
                nn.ReLU(inplace=True),
            )

        wide = 2 * channels
        self.stem = block(in_channels, channels)
        self.down1 = nn.Sequential(block(channels, wide, 2), block(wide, wide))
        self.down2 = nn.Sequential(block(wide, wide, 2), block(wide, wide))
        self.up2 = nn.ConvTranspose2d(wide, wide, 3, stride=2, padding=1, bias=False)
        self.up2_norm = nn.GroupNorm(groups, wide)
        self.up1 = nn.ConvTranspose2d(wide, channels, 3, stride=2, padding=1, bias=False)
        self.up1_norm = nn.GroupNorm(groups, channels)
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        d1 = self.down1(x)
        d2 = self.down2(d1)
        u2 = torch.relu(self.up2_norm(self.up2(d2, output_size=d1.shape[-2:])) + d1)
        return torch.relu(self.up1_norm(self.up1(u2, output_size=x.shape[-2:])))


class StereoStudent(nn.Module):
    """``forward(left, right, P2, baseline) -> StudentOutput``; see the module docstring.

    ``imitation_channels`` > 0 adds LIGA's feature-imitation adapter, a 1x1 convolution from the BEV features to
    the teacher's ``Ct`` channels (``distill.imitation``, :mod:`stereodistill.distill.imitation`). It is built
    last, so every other weight starts as it would without it (variants of one seed stay paired).
    """

    def __init__(self, config: StudentConfig, grid: AnchorGrid, imitation_channels: int = 0) -> None:
        super().__init__()
        if imitation_channels < 0:
            raise ValueError(f"imitation_channels must be >= 0, got {imitation_channels}")
        self.config = config
        self.grid = grid
        self.imitation_channels = imitation_channels
        g = config.norm_groups
        self.features = build_feature_extractor(config)
        self.aggregation = CostAggregation(config.cost_volume_channels, config.cost_channels, g)
        self.depth_head = DepthHead(config.cost_channels)
        self.lifter = VoxelLifter(grid, config.voxel_z, config.feature_stride)
        self.volume_conv = nn.Sequential(
            nn.Conv3d(
                config.cost_channels + config.semantic_channels,
                config.volume_channels,
                3,
                padding=1,
                bias=False,
            ),
            nn.GroupNorm(g, config.volume_channels),
            nn.ReLU(inplace=True),
        )
        self.height_pool = nn.AvgPool3d((config.z_pool, 1, 1)) if config.z_pool > 1 else nn.Identity()
        bev_in = config.volume_channels * (config.voxel_z // config.z_pool)
        self.bev = BEVBackbone(bev_in, config.bev_channels, g)
        self.head = AnchorHead(
            config.bev_channels,
            grid,
            num_tower_convs=2,
            norm="group",
            norm_groups=g,
            box_weight_std=0.02,
            cls_weight_std=0.1,
            box_tower_negative_slope=config.box_tower_negative_slope,
        )
        self.register_buffer("plane_depths", plane_depths(config), persistent=False)
        self.imitation = (
            nn.Conv2d(config.bev_channels, imitation_channels, 1) if imitation_channels > 0 else None
        )

    def stereo(self, left: Tensor, right: Tensor, P2: Tensor, baseline: Tensor) -> StereoOutput:
        """The stereo trunk alone (:data:`TRUNK_MODULES`): images -> cost features, plane logits, semantic."""
        b = left.shape[0]
        if right.shape != left.shape:
            raise ValueError(
                f"left and right images differ in shape: {tuple(left.shape)} vs {tuple(right.shape)}"
            )
        if P2.shape != (b, 3, 4) or baseline.shape != (b,):
            raise ValueError(
                f"expected P2 (B={b}, 3, 4) and baseline ({b},), got {tuple(P2.shape)} and {tuple(baseline.shape)}"
            )
        cfg = self.config
        both = self.features(torch.cat([left, right], dim=0))
        left_stereo, right_stereo = both.stereo[:b], both.stereo[b:]
        focal_baseline = P2[:, 0, 0].to(left_stereo.dtype) * baseline.to(left_stereo.dtype)
        disparities = plane_disparities(focal_baseline, self.plane_depths, cfg.feature_stride)
        cost = build_cost_volume(left_stereo, right_stereo, disparities, cfg.cost_volume, cfg.gwc_groups)
        cost_features = self.aggregation(cost)
        return StereoOutput(cost_features, self.depth_head(cost_features), both.semantic[:b])

    def forward(self, left: Tensor, right: Tensor, P2: Tensor, baseline: Tensor) -> StudentOutput:
        cost_features, depth_logits, semantic = self.stereo(left, right, P2, baseline)
        depth = soft_argmin_depth(depth_logits, self.plane_depths)
        voxels = self.lifter(cost_features, depth_logits, semantic, P2, self.plane_depths)
        volume = self.height_pool(self.volume_conv(voxels))
        bev_in = volume.flatten(1, 2)  # (B, C * Z', ny, nx), channel c * Z' + z
        bev = self.bev(bev_in)
        imitation = None if self.imitation is None else self.imitation(bev)
        return StudentOutput(self.head(bev), depth_logits, depth, volume, bev, imitation)
