"""The ``teacher`` section of params.yaml: output folder, network, training (with augmentation) and decoding.

Defaults are params.yaml's values. Imports no torch (the settings are read before any work).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stereodistill.head.settings import DecodeSettings
from stereodistill.settings import OMIT_AT_DEFAULT


@dataclass(frozen=True)
class TeacherConfig:
    """Network settings of the teacher (``teacher.model``)."""

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
    # defaults keep the project's own teacher.
    sparse_extra_z_voxels: int = field(default=0, metadata=OMIT_AT_DEFAULT)  # OpenPCDet: 1 (41 voxels for 40)
    last_down_z_padding: int = field(
        default=1, metadata=OMIT_AT_DEFAULT
    )  # OpenPCDet: 0 (conv4 pads (0, 1, 1))


@dataclass(frozen=True)
class AugmentSettings:
    """``teacher.train.augment``: SECOND's augmentations of a training frame."""

    flip_probability: float = 0.5
    rotation: tuple[float, float] = (-0.3927, 0.3927)
    scale: tuple[float, float] = (0.95, 1.05)
    # class name -> objects to paste per frame; None = off
    gt_sampling: dict[str, int] | None = field(
        default_factory=lambda: {"Car": 6, "Pedestrian": 4, "Cyclist": 4}
    )
    gt_sampling_min_points: int = 5


@dataclass(frozen=True)
class TeacherTrainSettings:
    """``teacher.train``: AdamW with a one-cycle schedule."""

    epochs: int = 20
    batch_size: int = 4
    lr: float = 0.003
    weight_decay: float = 0.01
    pct_start: float = 0.4
    div_factor: float = 10.0
    grad_clip: float = 10.0
    seed: int = 0
    num_workers: int = 0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"cls": 1.0, "loc": 2.0, "dir": 0.2})
    augment: AugmentSettings = AugmentSettings()


@dataclass(frozen=True)
class TeacherSettings:
    """The ``teacher`` section."""

    out_dir: str = "models/teacher"  # checkpoint.pt, teacher.pt, loss_log.csv
    model: TeacherConfig = TeacherConfig()
    train: TeacherTrainSettings = TeacherTrainSettings()
    decode: DecodeSettings = DecodeSettings()
