"""The ``student`` section of params.yaml: output folder, network, training and decoding.

Defaults are params.yaml's values (a CPU-sized student for the synthetic benchmark); the LIGA-Stereo-scale
``kitti`` preset is docs/presets/params.kitti.yaml. Imports no torch (see :mod:`stereodistill.settings`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from stereodistill.head.settings import DecodeSettings
from stereodistill.settings import OMIT_AT_DEFAULT, fail

BACKBONES = ("small", "resnet34")
COST_VOLUME_KINDS = ("concat", "gwc")
RESNET34_FEATURE_STRIDE = 4  # stem 2 x layer2 2 (layer3 and layer4 dilate instead of striding), as LIGA
SCHEDULES = ("cosine", "step")


@dataclass(frozen=True)
class StudentConfig:
    """``student.model``: the network. Defaults: the CPU-sized student of the synthetic benchmark."""

    # 2D trunk: "small" (trained from scratch, sized by the three backbone_* fields below) or "resnet34"
    # (torchvision's ResNet-34 with LIGA's strides and dilations, stereodistill/student/resnet.py; the backbone_*
    # fields must stay unset). Both fields are left out of saved configs at their defaults.
    backbone: str = field(default="small", metadata=OMIT_AT_DEFAULT)
    # resnet34 only: a torchvision ResNet-34 ImageNet state-dict file loaded into the trunk before training.
    pretrained: str | None = field(default=None, metadata=OMIT_AT_DEFAULT)
    # The small trunk: a stride-2 stem, then one stage per entry (a stage = ``blocks`` residual blocks, the first
    # with the stage's stride). The feature stride is 2 * prod(backbone_strides).
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
    num_planes: int = 16
    cost_channels: int = 16  # 3D aggregation width (the hourglass goes to 2x this)
    # Frustum -> voxels -> BEV.
    voxel_z: int = 4  # height cells over the grid's z range
    z_pool: int = 1  # average-pool factor over height after lifting (voxel_z must be a multiple)
    volume_channels: int = 16
    bev_channels: int = 32
    norm_groups: int = 4  # GroupNorm groups everywhere (every channel count must be a multiple)
    # Leaky slope of the head's regression tower (0 = ReLU, LIGA). Plain ReLUs there die at the positives when the
    # student is trained from scratch (stereodistill/head/anchor_head.py).
    box_tower_negative_slope: float = 0.1

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            fail("backbone", f"expected one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.backbone == "resnet34":
            small = ("backbone_channels", "backbone_strides", "backbone_blocks")
            for name in small:
                if getattr(self, name) != getattr(StudentConfig, name):
                    fail(
                        name,
                        f"configures the small trunk only; leave {', '.join(small)} out with backbone: resnet34",
                    )
        elif self.pretrained is not None:
            fail(
                "pretrained",
                "pretrained weights are for backbone: resnet34 (the small trunk trains from scratch)",
            )
        if self.pretrained is not None and not self.pretrained.strip():
            fail("pretrained", "expected the path of a torchvision ResNet-34 state-dict file or null")
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
            "backbone_channels": self.backbone_channels if self.backbone == "small" else (),
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

    # ------------------------------------------------------------------ derived quantities
    @property
    def feature_stride(self) -> int:
        """Image pixels per feature pixel (small trunk: the stem's 2 times every stage stride; resnet34: 4)."""
        if self.backbone == "resnet34":
            return RESNET34_FEATURE_STRIDE
        return 2 * math.prod(self.backbone_strides)

    @property
    def plane_step(self) -> float:
        """Distance in metres between neighbouring depth planes."""
        return (self.depth_max - self.depth_min) / self.num_planes

    @property
    def cost_volume_channels(self) -> int:
        return 2 * self.stereo_channels if self.cost_volume == "concat" else self.gwc_groups


@dataclass(frozen=True)
class StudentTrainSettings:
    """``student.train``: AdamW, warm-up, cosine or step decay, the stereo flip, loss weights."""

    epochs: int = 24
    batch_size: int = 2
    lr: float = 0.003
    weight_decay: float = 0.0001
    warmup_epochs: float = 1.0
    warmup_factor: float = 0.1  # the warm-up starts at lr * warmup_factor
    schedule: str = "cosine"  # cosine | step
    step_epochs: tuple[int, ...] = (50,)
    step_gamma: float = 0.1
    min_lr_ratio: float = 0.05  # cosine ends at lr * min_lr_ratio
    grad_clip: float = 10.0
    seed: int = 0
    num_workers: int = 0
    flip_probability: float = 0.5
    image_scale: int = 2  # integer image downsampling (P2/P3 scaled consistently), see student/dataset.py
    frame_limit: int = 0  # > 0: train on the first that many frames only (smoke runs)
    regression_warmup_epochs: float = 4.0  # loc and XGD weights ramp 0 -> 1 over these epochs (0: no ramp)
    ema_decay: float = 0.0  # > 0: student.pt holds this moving average of the weights (0: the last ones)
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"cls": 1.0, "loc": 2.0, "dir": 0.2, "depth": 1.0}
    )

    def __post_init__(self) -> None:
        if self.epochs < 1:
            fail("epochs", f"must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            fail("batch_size", f"must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            fail("lr", f"must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            fail("schedule", f"expected one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 <= self.flip_probability <= 1.0:
            fail("flip_probability", f"must lie in [0, 1], got {self.flip_probability}")
        if not isinstance(self.image_scale, int) or self.image_scale < 1:
            fail("image_scale", f"must be a positive integer, got {self.image_scale!r}")
        if not self.regression_warmup_epochs >= 0:
            fail("regression_warmup_epochs", f"must be >= 0, got {self.regression_warmup_epochs}")
        if not 0.0 <= self.ema_decay < 1.0:
            fail("ema_decay", f"must lie in [0, 1) (0: no average), got {self.ema_decay}")
        if self.warmup_epochs < 0:
            fail("warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        if not 0 < self.warmup_factor <= 1:
            fail("warmup_factor", f"need 0 < warmup_factor <= 1, got {self.warmup_factor}")
        if set(self.loss_weights) != {"cls", "loc", "dir", "depth"}:
            fail("loss_weights", f"needs exactly cls, loc, dir, depth; got {sorted(self.loss_weights)}")


@dataclass(frozen=True)
class StudentPretrainSettings:
    """``student.pretrain``: the stereo trunk's depth pretraining (stereodistill/student/pretrain.py).

    The images it sees are the student's: ``student.train.image_scale``, ``flip_probability`` and ``num_workers``
    apply. The learning rate warms up from ``lr * warmup_factor`` over ``warmup_epochs``, then follows a cosine to
    ``lr * min_lr_ratio``. ``epochs: 0`` pretrains nothing: every student then trains its trunk from scratch.
    """

    out_dir: str = "models/student_pretrain"  # checkpoint.pt (every epoch), trunk.pt (finished), loss_log.csv
    epochs: int = 60
    batch_size: int = 2
    lr: float = 0.003
    weight_decay: float = 0.0001
    warmup_epochs: float = 1.0
    warmup_factor: float = 0.1
    min_lr_ratio: float = 0.05
    grad_clip: float = 10.0
    seed: int = 0  # the trunk's initial weights and frame order; one trunk serves every student seed
    schedule: ClassVar[str] = "cosine"

    def __post_init__(self) -> None:
        if self.epochs < 0:
            fail("epochs", f"must be >= 0 (0: no pretraining), got {self.epochs}")
        if self.batch_size < 1:
            fail("batch_size", f"must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            fail("lr", f"must be > 0, got {self.lr}")
        if self.warmup_epochs < 0:
            fail("warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        if not 0 < self.warmup_factor <= 1:
            fail("warmup_factor", f"need 0 < warmup_factor <= 1, got {self.warmup_factor}")


@dataclass(frozen=True)
class StudentSettings:
    """The ``student`` section."""

    out_dir: str = "models/student"  # checkpoint.pt, student.pt, loss_log.csv
    pretrain: StudentPretrainSettings = StudentPretrainSettings()
    model: StudentConfig = StudentConfig()
    train: StudentTrainSettings = StudentTrainSettings()
    decode: DecodeSettings = DecodeSettings()
