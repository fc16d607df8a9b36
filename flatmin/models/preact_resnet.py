"""Pre-activation residual networks for 32x32 inputs (He et al., ECCV 2016, "Identity mappings").

BN and ReLU come before each convolution; where the shape changes, the shortcut is a strided 1x1
convolution of the pre-activated input. :class:`PreActResNet` is the network shape shared by
PreAct ResNet-18 (:func:`preact_resnet18`, 11.17M parameters on CIFAR-10) and the Wide ResNets
(``flatmin.models.wide_resnet``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3, plus the shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
                         if stride != 1 or in_planes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + shortcut


class PreActResNet(nn.Module):
    """A 3x3 stem of ``stem_width`` channels, one stage of ``blocks_per_stage`` blocks per entry of
    ``widths`` (every stage after the first starts with a stride-2 block), final BN-ReLU, global
    average pooling and a linear head."""

    def __init__(self, num_classes: int, in_channels: int = 3, stem_width: int = 64,
                 widths: Sequence[int] = (64, 128, 256, 512), blocks_per_stage: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False)
        blocks, in_planes = [], stem_width
        for index, planes in enumerate(widths):
            for block_index in range(blocks_per_stage):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(PreActBlock(in_planes, planes, stride, dropout))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_planes)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.linear(out.mean(dim=(2, 3)))


def preact_resnet18(num_classes: int, in_channels: int = 3) -> PreActResNet:
    """PreAct ResNet-18: four stages of two blocks with 64/128/256/512 channels."""
    return PreActResNet(num_classes, in_channels)
