"""ResNet-34 trunk in torchvision's module layout, with LIGA-Stereo's strides and dilations, and its ImageNet loader.

Why not ``torchvision.models.resnet34``: the package pins a CPU torch for which no importable torchvision build
exists (torchvision's operators need the torch it was built against), and a newer torch would change the default
pipeline's numbers. So the trunk is defined here with torchvision's module names and parameter shapes --
``conv1``, ``bn1``, ``layer1`` .. ``layer4`` of basic blocks (``conv1``, ``bn1``, ``conv2``, ``bn2``,
``downsample.0`` / ``downsample.1``) -- and torchvision's own ImageNet state-dict file (what
``ResNet34_Weights.IMAGENET1K_V1`` downloads: ``resnet34-b627a593.pth`` or ``resnet34-333f7ec4.pth``) loads
into it unchanged (:func:`load_imagenet_weights`; its ``fc.*`` classifier keys are not used). The key list is
checked against torchvision's in tests/test_student_resnet.py.

Changes against the classification network, as LIGA's stereo trunk: no max-pool after the stem, stage strides
``(1, 2, 1, 1)`` and dilations ``(1, 1, 2, 4)``, so every stage from ``layer2`` on runs at 1/4 of the image
(LIGA's lifting resolution). A dilated block dilates its first 3x3 conv only (the second stays plain). Every
conv has odd kernels and symmetric padding, so a stride-``s`` map has ``ceil(H / s)`` rows and its pixel ``i``
is centred on image row ``s * i`` (the convention of :mod:`stereodistill.student.backbone`). Widths are
torchvision's (64, 128, 256, 512); LIGA narrows layers 3 and 4 to 128, which no ImageNet file fits. BatchNorm
(trainable, as LIGA), not the GroupNorm of the rest of the student: the ImageNet weights include its statistics.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from stereodistill.checkpoints import load_weights_only
from stereodistill.errors import InputError

STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_BLOCKS = (3, 4, 6, 3)  # ResNet-34
STAGE_STRIDES = (1, 2, 1, 1)
STAGE_DILATIONS = (1, 1, 2, 4)
CLASSIFIER_PREFIX = "fc."  # torchvision's ImageNet classifier: in the file, not in the trunk
# BatchNorm's step counters: absent from files saved before torch 0.4 (resnet34-333f7ec4.pth); the trunk keeps its own.
OPTIONAL_SUFFIX = ".num_batches_tracked"


class ResNetBlock(nn.Module):
    """torchvision's BasicBlock layout; ``conv1`` carries the stride and the dilation."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNet34Trunk(nn.Module):
    """Normalised images ``(B, 3, H, W)`` -> the outputs of ``layer1`` .. ``layer4``.

    Shapes: ``layer1`` ``(B, 64, ceil(H/2), ceil(W/2))``; ``layer2`` .. ``layer4`` ``(B, 128 | 256 | 512, Hf, Wf)``
    with ``Hf = ceil(H/4)``, ``Wf = ceil(W/4)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        in_channels = STAGE_WIDTHS[0]
        for index, (width, blocks, stride, dilation) in enumerate(
            zip(STAGE_WIDTHS, STAGE_BLOCKS, STAGE_STRIDES, STAGE_DILATIONS, strict=True), start=1
        ):
            layer = nn.Sequential(
                *(
                    ResNetBlock(in_channels if b == 0 else width, width, stride if b == 0 else 1, dilation)
                    for b in range(blocks)
                )
            )
            self.add_module(f"layer{index}", layer)
            in_channels = width

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.relu(self.bn1(self.conv1(images)))
        outputs = []
        for index in range(1, len(STAGE_WIDTHS) + 1):
            x = getattr(self, f"layer{index}")(x)
            outputs.append(x)
        return outputs


def load_imagenet_weights(trunk: ResNet34Trunk, path: str | Path) -> None:
    """Copy torchvision's ResNet-34 state dict at ``path`` into ``trunk`` (read with ``weights_only=True``).

    The file's ``fc.*`` keys (the ImageNet classifier) are ignored, and BatchNorm's ``num_batches_tracked`` may be
    absent (older files). Any other key the trunk lacks, a trunk key the file lacks, or a shape that differs is refused with an :class:`InputError` naming the file, the key and both
    shapes; nothing is copied then.
    """
    if not Path(path).is_file():
        raise InputError(
            "student.model.pretrained names no file: download torchvision's ResNet-34 ImageNet weights "
            "(docs/USAGE.md, KITTI) and give their path",
            path,
        )
    state = load_weights_only(path)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(
            "expected a state dict (parameter name -> tensor) of torchvision's resnet34, "
            f"found {type(state).__name__}",
            path,
        )
    expected = trunk.state_dict()
    weights = {key: value for key, value in state.items() if not key.startswith(CLASSIFIER_PREFIX)}
    for key, value in expected.items():
        if key not in weights:
            if key.endswith(OPTIONAL_SUFFIX):
                continue
            raise InputError(
                f"not a torchvision resnet34 state dict: key {key} {tuple(value.shape)} is missing", path
            )
        if weights[key].shape != value.shape:
            raise InputError(
                f"not a torchvision resnet34 state dict: {key} has shape {tuple(weights[key].shape)} in the file, "
                f"the trunk expects {tuple(value.shape)}",
                path,
            )
    unexpected = [key for key in weights if key not in expected]
    if unexpected:
        key = unexpected[0]
        raise InputError(
            f"not a torchvision resnet34 state dict: unexpected key {key} {tuple(weights[key].shape)} "
            f"({len(unexpected)} unexpected in all)",
            path,
        )
    with torch.no_grad():
        trunk.load_state_dict(weights)
