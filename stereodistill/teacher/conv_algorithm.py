"""Which spconv algorithm a sparse convolution uses, chosen from the device it runs on.

spconv 2's CUDA kernels (implicit GEMM, its default) do not exist on the CPU, where only ``ConvAlgo.Native``
runs. spconv 2.3 keeps every weight in the same ``[Cout, k..., Cin]`` layout for all algorithms, so the
algorithm can be switched on an existing model: :func:`use_device_conv_algorithm` is the one place that does it,
and the teacher calls it whenever it is moved to a device.
"""

from __future__ import annotations

import torch
from spconv.core import ConvAlgo
from spconv.pytorch.conv import SparseConvolution
from torch import nn


def conv_algorithm_for(device: torch.device | str) -> ConvAlgo:
    """``ConvAlgo.Native`` on the CPU, spconv's default (``MaskImplicitGemm``) on CUDA."""
    return ConvAlgo.MaskImplicitGemm if torch.device(device).type == "cuda" else ConvAlgo.Native


def use_device_conv_algorithm(module: nn.Module, device: torch.device | str) -> int:
    """Set the algorithm of every spconv convolution in ``module`` for ``device``; returns how many were set."""
    algo = conv_algorithm_for(device)
    count = 0
    for layer in module.modules():
        if isinstance(layer, SparseConvolution):
            layer.algo = algo
            count += 1
    return count
