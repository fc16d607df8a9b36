"""PyramidNet (Han, Kim & Kim, CVPR 2017) for 32x32 inputs, as trained in the GAM paper.

The variant here is the one the GAM paper names PyramidNet-110: depth 110, widening factor
alpha = 270, *basic* (non-bottleneck) blocks, no ShakeDrop; 28.5M parameters on CIFAR-10 (the
PyramidNet paper lists 28.3M). The channel count grows linearly by ``alpha / (3n)`` with every
block; a block is BN-conv3x3-BN-ReLU-conv3x3-BN, and its shortcut is the input (2x2 average
pooled where the block strides) with zero channels appended. Layout and initialisation follow the
authors' code (dyhan0920/PyramidNet-PyTorch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PyramidBlock(nn.Module):
    """BN-conv3x3-BN-ReLU-conv3x3-BN; the shortcut is zero-padded to the wider output."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.pool = nn.AvgPool2d(2, stride=2, ceil_mode=True) if stride != 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bn1(x))
        out = self.bn3(self.conv2(F.relu(self.bn2(out))))
        shortcut = self.pool(x)
        return out + F.pad(shortcut, (0, 0, 0, 0, 0, out.shape[1] - shortcut.shape[1]))


class PyramidNet(nn.Module):
    """PyramidNet-``depth`` with widening factor ``alpha`` and basic blocks; ``depth`` = 6n + 2."""

    def __init__(self, depth: int, alpha: float, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"PyramidNet depth must be 6n + 2 (got {depth}).")
        per_stage = (depth - 2) // 6
        step = alpha / (3 * per_stage)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, width, in_planes = [], 16.0, 16
        for block_index in range(3 * per_stage):
            width += step
            stride = 2 if block_index in (per_stage, 2 * per_stage) else 1
            blocks.append(PyramidBlock(in_planes, round(width), stride))
            in_planes = round(width)
        self.blocks = nn.Sequential(*blocks)
        self.bn_final = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.bn1(self.conv1(x)))
        out = F.relu(self.bn_final(out))
        return self.fc(out.mean(dim=(2, 3)))
