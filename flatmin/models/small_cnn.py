"""A small convolutional network for tiny images (the default model, sized for 8x8 digits)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv-BN-ReLU blocks with one 2x max-pool after the first block, global average pooling and a
    linear head. BatchNorm is deliberate: it exercises the rule that only the first pass of a
    multi-pass step updates running statistics (docs/optimizers.md, "BatchNorm")."""

    def __init__(self, num_classes: int, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128),
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            if index == 0:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))
        return self.head(self.dropout(x))
