"""Network settings of the LIGA-Stereo-style stereo student (the ``student.model`` section of params.yaml).

The defaults are a CPU-sized student for the default synthetic benchmark (640 x 192 images, f_u = 360 px,
the default 0.4 m anchor grid over x in [2, 40.4] m): features at 1/4 resolution with 16 channels, 24 depth
planes over [2, 40.4] m (1.6 m apart), a group-wise correlation volume, 8 height cells pooled to 4.

``kitti`` preset (LIGA-Stereo scale, METHOD.md §2; meant for a 0.2 m grid over [2, 59.6] x [-30.4, 30.4] x
[-3, 1] and full-size KITTI images): :data:`KITTI_PRESET`, i.e. the ``student.model`` mapping::

    backbone_channels: [64, 128, 128, 128]   backbone_strides: [1, 2, 1, 1]   backbone_blocks: [3, 4, 6, 3]
    stereo_channels: 32      semantic_channels: 32
    cost_volume: concat      depth_min: 2.0   depth_max: 59.6   num_planes: 72      # planes 2.4 + 0.8 i
    cost_channels: 32        volume_channels: 32
    voxel_z: 20              z_pool: 4        bev_channels: 64   norm_groups: 32

(LIGA's 2D trunk is an ImageNet ResNet-34 with dilations and an SPP neck, and its stereo feature is full
resolution; this student is trained from scratch, has no SPP, and builds every feature at 1/stride.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from stereodistill.errors import InputError

COST_VOLUME_KINDS = ("concat", "gwc")

# LIGA-Stereo-scale settings (see the module docstring); ``StudentConfig.from_params(KITTI_PRESET)``.
KITTI_PRESET: dict[str, Any] = {
    "backbone_channels": [64, 128, 128, 128],
    "backbone_strides": [1, 2, 1, 1],
    "backbone_blocks": [3, 4, 6, 3],
    "stereo_channels": 32,
    "semantic_channels": 32,
    "cost_volume": "concat",
    "depth_min": 2.0,
    "depth_max": 59.6,
    "num_planes": 72,
    "cost_channels": 32,
    "volume_channels": 32,
    "voxel_z": 20,
    "z_pool": 4,
    "bev_channels": 64,
    "norm_groups": 32,
}


@dataclass(frozen=True)
class StudentConfig:
    """Student network settings. Validated on construction (``InputError`` naming ``student.model.<field>``)."""

    # 2D trunk: a stride-2 stem, then one stage per entry (a stage = ``blocks`` residual blocks, the first with
    # the stage's stride). The feature stride is 2 * prod(backbone_strides).
    backbone_channels: tuple[int, ...] = (16, 16, 32)
    backbone_strides: tuple[int, ...] = (1, 2, 1)
    backbone_blocks: tuple[int, ...] = (1, 1, 1)
    stereo_channels: int = 16  # feature matched by the cost volume
    semantic_channels: int = 16  # feature lifted with the depth probability
    # Plane sweep: num_planes planes at the centres of equal depth intervals of [depth_min, depth_max].
    cost_volume: str = "gwc"  # "concat" (2 * stereo_channels) or "gwc" (gwc_groups channels)
    gwc_groups: int = 8
    depth_min: float = 2.0
    depth_max: float = 40.4
    num_planes: int = 24
    cost_channels: int = 16  # 3D aggregation width (the hourglass goes to 2x this)
    # Frustum -> voxels -> BEV.
    voxel_z: int = 8  # height cells over the grid's z range
    z_pool: int = 2  # average-pool factor over height after lifting (voxel_z must be a multiple)
    volume_channels: int = 16
    bev_channels: int = 32
    norm_groups: int = 4  # GroupNorm groups everywhere (every channel count must be a multiple)
    # Leaky slope of the head's regression tower (0 = ReLU, LIGA). Plain ReLUs there die at the positives when the
    # student is trained from scratch (stereodistill/head/anchor_head.py).
    box_tower_negative_slope: float = 0.1

    def __post_init__(self) -> None:
        where = "student.model"

        def fail(field: str, message: str) -> None:
            raise InputError(f"{where}.{field}: {message}", "params.yaml")

        n = len(self.backbone_channels)
        if n == 0 or len(self.backbone_strides) != n or len(self.backbone_blocks) != n:
            fail(
                "backbone_channels",
                "backbone_channels, backbone_strides, backbone_blocks need equal, >0 lengths",
            )
        if any(s not in (1, 2) for s in self.backbone_strides):
            fail("backbone_strides", f"every stride must be 1 or 2, got {list(self.backbone_strides)}")
        if any(b < 1 for b in self.backbone_blocks):
            fail("backbone_blocks", f"every stage needs at least one block, got {list(self.backbone_blocks)}")
        if self.cost_volume not in COST_VOLUME_KINDS:
            fail("cost_volume", f"expected one of {', '.join(COST_VOLUME_KINDS)}, got {self.cost_volume!r}")
        if self.cost_volume == "gwc" and (self.gwc_groups < 1 or self.stereo_channels % self.gwc_groups):
            fail("gwc_groups", f"must divide stereo_channels ({self.stereo_channels}), got {self.gwc_groups}")
        if not 0 < self.depth_min < self.depth_max:
            fail("depth_min", f"need 0 < depth_min < depth_max, got {self.depth_min}, {self.depth_max}")
        if self.num_planes < 2:
            fail("num_planes", f"need at least 2 planes, got {self.num_planes}")
        if not 0.0 <= self.box_tower_negative_slope < 1.0:
            fail("box_tower_negative_slope", f"must be in [0, 1), got {self.box_tower_negative_slope}")
        if self.voxel_z < 1 or self.z_pool < 1 or self.voxel_z % self.z_pool:
            fail("voxel_z", f"must be a positive multiple of z_pool ({self.z_pool}), got {self.voxel_z}")
        channels = {
            "backbone_channels": self.backbone_channels,
            "stereo_channels": (self.stereo_channels,),
            "semantic_channels": (self.semantic_channels,),
            "cost_channels": (self.cost_channels,),
            "volume_channels": (self.volume_channels,),
            "bev_channels": (self.bev_channels,),
        }
        if self.norm_groups < 1:
            fail("norm_groups", f"must be positive, got {self.norm_groups}")
        for name, values in channels.items():
            if any(c < 1 or c % self.norm_groups for c in values):
                fail(
                    name,
                    f"every channel count must be a positive multiple of norm_groups ({self.norm_groups})",
                )

    @classmethod
    def from_params(cls, section: Mapping[str, Any], where: str = "student.model") -> StudentConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(section) - known)
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(f'{where}.{k}' for k in unknown)}", "params.yaml")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    # ------------------------------------------------------------------ derived quantities
    @property
    def feature_stride(self) -> int:
        """Image pixels per feature pixel (the stem's 2 times every stage stride)."""
        return 2 * math.prod(self.backbone_strides)

    @property
    def plane_step(self) -> float:
        """Distance in metres between neighbouring depth planes."""
        return (self.depth_max - self.depth_min) / self.num_planes

    def plane_depths(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Plane depths ``(D,)`` float32: ``depth_min + (i + 0.5) * plane_step`` (interval centres, as LIGA)."""
        i = torch.arange(self.num_planes, dtype=torch.float64)
        return (self.depth_min + (i + 0.5) * self.plane_step).to(device=device, dtype=torch.float32)

    @property
    def cost_volume_channels(self) -> int:
        return 2 * self.stereo_channels if self.cost_volume == "concat" else self.gwc_groups
