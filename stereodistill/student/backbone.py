"""The shared 2D feature extractor of the student (applied to the left and the right image).

A small ResNet-like trunk trained from scratch, without max-pool: a stride-2 3x3 stem, then stages of basic
residual blocks (the first block of a stage carries its stride). Every conv uses kernel 3 / padding 1, so a
feature map of stride ``s`` has ``ceil(H / s) x ceil(W / s)`` pixels and feature pixel ``(i, j)`` is centred on
image pixel ``(v, u) = (s * i, s * j)``; the cost volume and the lifting rely on that convention.

Two outputs at the feature stride, both from the concatenation of every stage output at that stride:

- ``stereo`` ``(B, stereo_channels, Hf, Wf)``: conv3x3 + GN + ReLU + conv1x1 (matched by the cost volume);
- ``semantic`` ``(B, semantic_channels, Hf, Wf)``: conv3x3 + GN + ReLU (lifted weighted by depth probability).

Inputs are RGB images ``(B, 3, H, W)`` in [0, 1]; they are normalised with ImageNet's mean and std (as LIGA).
GroupNorm replaces LIGA's BatchNorm: the student trains with tiny batches.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

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
    """Images ``(B, 3, H, W)`` in [0, 1] -> :class:`ImageFeatures` at ``config.feature_stride``."""

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
        self.stereo_head = nn.Sequential(
            conv_norm_relu(fused, config.stereo_channels, g),
            nn.Conv2d(config.stereo_channels, config.stereo_channels, 1),
        )
        self.semantic_head = conv_norm_relu(fused, config.semantic_channels, g)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> ImageFeatures:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = self.stem((images - self.mean) / self.std)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        fused = torch.cat(outputs[self.first_fused_stage :], dim=1)
        return ImageFeatures(self.stereo_head(fused), self.semantic_head(fused))
