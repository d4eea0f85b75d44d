"""The shared 2D feature extractor of the student (applied to the left and the right image).

Two trunks (``student.model.backbone``), built by :func:`build_feature_extractor`:

- ``small`` (:class:`FeatureExtractor`, the CPU default): a small ResNet-like trunk trained from scratch, without
  max-pool: a stride-2 3x3 stem, then stages of basic residual blocks with GroupNorm (the first block of a stage
  carries its stride);
- ``resnet34`` (:class:`ResNet34FeatureExtractor`, the ``kitti`` preset): torchvision's ResNet-34 with LIGA's
  strides and dilations (:mod:`stereodistill.student.resnet`), optionally initialised from the ImageNet file.

Every conv has an odd kernel and symmetric padding, so a feature map of stride ``s`` has
``ceil(H / s) x ceil(W / s)`` pixels and feature pixel ``(i, j)`` is centred on image pixel
``(v, u) = (s * i, s * j)``; the cost volume and the lifting rely on that convention.

Two outputs at the feature stride, both from the concatenation of every trunk stage output at that stride:

- ``stereo`` ``(B, stereo_channels, Hf, Wf)``: conv3x3 + GN + ReLU + conv1x1 (matched by the cost volume);
- ``semantic`` ``(B, semantic_channels, Hf, Wf)``: conv3x3 + GN + ReLU (lifted weighted by depth probability).

Inputs are RGB images ``(B, 3, H, W)`` in [0, 1]; both trunks normalise them with ImageNet's mean and std (as
LIGA), the input statistics ImageNet weights were trained on. GroupNorm in the small trunk and the heads
replaces LIGA's BatchNorm: the student trains with tiny batches.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from stereodistill.student.resnet import STAGE_WIDTHS, ResNet34Trunk
from stereodistill.student.settings import StudentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFeatures(NamedTuple):
    stereo: Tensor  # (B, stereo_channels, Hf, Wf)
    semantic: Tensor  # (B, semantic_channels, Hf, Wf)


def conv_norm_relu(in_channels: int, out_channels: int, groups: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(groups, out_channels),
        nn.ReLU(inplace=True),
    )


def stereo_head(in_channels: int, config: StudentConfig) -> nn.Sequential:
    """conv3x3 + GN + ReLU + conv1x1 to ``stereo_channels``."""
    return nn.Sequential(
        conv_norm_relu(in_channels, config.stereo_channels, config.norm_groups),
        nn.Conv2d(config.stereo_channels, config.stereo_channels, 1),
    )


def semantic_head(in_channels: int, config: StudentConfig) -> nn.Sequential:
    """conv3x3 + GN + ReLU to ``semantic_channels``."""
    return conv_norm_relu(in_channels, config.semantic_channels, config.norm_groups)


def imagenet_mean_std() -> tuple[Tensor, Tensor]:
    """ImageNet's RGB mean and std, ``(1, 3, 1, 1)`` each."""
    return torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def add_feature_heads(trunk: nn.Module, fused_channels: int, config: StudentConfig) -> None:
    """Give a trunk its two output heads (``stereo_head``, ``semantic_head``, reading ``fused_channels``) and the
    ImageNet ``mean`` / ``std`` buffers its input is normalised with; called after the trunk's own layers, so
    parameters are created (and the RNG drawn) in the same order for every trunk."""
    trunk.stereo_head = stereo_head(fused_channels, config)
    trunk.semantic_head = semantic_head(fused_channels, config)
    mean, std = imagenet_mean_std()
    trunk.register_buffer("mean", mean, persistent=False)
    trunk.register_buffer("std", std, persistent=False)


def normalised(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Images ``(B, 3, H, W)`` in [0, 1] -> ``(images - mean) / std``; refuses any other shape."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    return (images - mean) / std


class BasicBlock(nn.Module):
    """ResNet basic block with GroupNorm; a 1x1 projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = conv_norm_relu(in_channels, out_channels, groups, stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.GroupNorm(groups, out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.norm2(self.conv2(self.conv1(x))) + self.shortcut(x))


class FeatureExtractor(nn.Module):
    """The small trunk: images ``(B, 3, H, W)`` in [0, 1] -> :class:`ImageFeatures` at ``config.feature_stride``."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        g = config.norm_groups
        channels = config.backbone_channels
        self.stem = conv_norm_relu(3, channels[0], g, stride=2)
        self.stages = nn.ModuleList()
        in_channels = channels[0]
        for out_channels, stride, blocks in zip(
            channels, config.backbone_strides, config.backbone_blocks, strict=True
        ):
            layers = [
                BasicBlock(in_channels if b == 0 else out_channels, out_channels, stride if b == 0 else 1, g)
                for b in range(blocks)
            ]
            self.stages.append(nn.Sequential(*layers))
            in_channels = out_channels
        # Stages after the last stride-2 stage run at the final stride; their outputs are concatenated.
        last_down = max((i for i, s in enumerate(config.backbone_strides) if s == 2), default=0)
        self.first_fused_stage = last_down
        fused = sum(channels[last_down:])
        add_feature_heads(self, fused, config)

    def forward(self, images: Tensor) -> ImageFeatures:
        x = self.stem(normalised(images, self.mean, self.std))
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        fused = torch.cat(outputs[self.first_fused_stage :], dim=1)
        return ImageFeatures(self.stereo_head(fused), self.semantic_head(fused))


class ResNet34FeatureExtractor(nn.Module):
    """The resnet34 trunk: images ``(B, 3, H, W)`` in [0, 1] -> :class:`ImageFeatures` at stride 4.

    The heads read ``layer2``, ``layer3`` and ``layer4`` (all at 1/4) concatenated: 128 + 256 + 512 channels.
    ``trunk`` takes torchvision's ImageNet state dict (:func:`stereodistill.student.resnet.load_imagenet_weights`).
    """

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.trunk = ResNet34Trunk()
        fused = sum(STAGE_WIDTHS[1:])
        add_feature_heads(self, fused, config)

    def forward(self, images: Tensor) -> ImageFeatures:
        outputs = self.trunk(normalised(images, self.mean, self.std))
        fused = torch.cat(outputs[1:], dim=1)
        return ImageFeatures(self.stereo_head(fused), self.semantic_head(fused))


def build_feature_extractor(config: StudentConfig) -> FeatureExtractor | ResNet34FeatureExtractor:
    """The trunk ``config.backbone`` names (randomly initialised; see ``student.model.pretrained``)."""
    if config.backbone == "resnet34":
        return ResNet34FeatureExtractor(config)
    return FeatureExtractor(config)
