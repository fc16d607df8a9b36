"""The small conv net the analysis measures are tested on: two convolutions, each followed by a
BatchNorm, and a linear head, for 6x6 images of 3 classes."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


class ConvNet(nn.Module):
    """conv → BN → activation → conv → BN → activation → linear; ``frozen_bias``: the first conv's bias
    does not require a gradient (a frozen entry the measures must leave alone)."""

    def __init__(self, activation: Callable[[Tensor], Tensor] = torch.tanh, frozen_bias: bool = False) -> None:
        super().__init__()
        self.activation = activation
        self.conv1, self.bn1 = nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.head = nn.Linear(16, 3)
        self.conv1.bias.requires_grad_(not frozen_bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.activation(self.bn1(self.conv1(x)))
        return self.head(self.activation(self.bn2(self.conv2(x))).flatten(1))
