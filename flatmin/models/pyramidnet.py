"""PyramidNet (Han, Kim & Kim, CVPR 2017) for 32x32 inputs, with optional ShakeDrop.

Two variants are configured: the GAM paper's PyramidNet-110 (depth 110, widening factor
alpha = 270, basic blocks, no ShakeDrop; 28.5M parameters on CIFAR-10, the PyramidNet paper lists
28.3M) and the SAM paper's PyramidNet-272 (alpha = 200, bottleneck blocks; 26.2M parameters, the
PyramidNet paper lists 26.0M), with and without ShakeDrop (Yamada et al., IEEE Access 2019).

The channel count grows linearly by ``alpha / (3n)`` with every block. A basic block is
BN-conv3x3-BN-ReLU-conv3x3-BN (depth = 6n + 2); a bottleneck block is
BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1(4x)-BN (depth = 9n + 2). The shortcut is the input
(2x2 average pooled where the block strides) with zero channels appended. Layout and
initialisation follow the authors' code (dyhan0920/PyramidNet-PyTorch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx

from flatmin.errors import ConfigError


def per_example_uniform(batch: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """One draw from U[low, high] per example of ``batch``, shaped to broadcast over the rest."""
    shape = (batch.shape[0],) + (1,) * (batch.dim() - 1)
    return torch.empty(shape, device=batch.device, dtype=batch.dtype).uniform_(low, high)


class ShakeDropFunction(torch.autograd.Function):
    """ShakeDrop's residual scaling (Yamada et al., 2019, eq. 9): in training the residual branch is
    multiplied by ``b + alpha - b*alpha`` going forward and by ``b + beta - b*beta`` going backward,
    with ``b ~ Bernoulli(survival)`` drawn once per batch and ``alpha ~ U[-1, 1]``,
    ``beta ~ U[0, 1]`` drawn per example (computed as ``b + (1 - b) * alpha``, exact for b in {0, 1}).
    Drawn on the device: no host synchronisation."""

    @staticmethod
    def forward(ctx: FunctionCtx, residual: torch.Tensor, survival: float) -> torch.Tensor:
        gate = torch.empty((), device=residual.device, dtype=residual.dtype).bernoulli_(survival)
        alpha = per_example_uniform(residual, -1.0, 1.0)
        ctx.save_for_backward(gate)
        return residual * (gate + (1 - gate) * alpha)

    @staticmethod
    def backward(ctx: FunctionCtx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (gate,) = ctx.saved_tensors
        beta = per_example_uniform(grad_output, 0.0, 1.0)
        return grad_output * (gate + (1 - gate) * beta), None


class ShakeDrop(nn.Module):
    """ShakeDrop on a residual branch with survival probability ``survival`` (``p_l``); in eval mode
    the branch is scaled by its expectation, ``survival``."""

    def __init__(self, survival: float) -> None:
        super().__init__()
        self.survival = survival

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        if self.training:
            return ShakeDropFunction.apply(residual, self.survival)
        return residual * self.survival

    def extra_repr(self) -> str:
        return f"survival={self.survival:.4f}"


class PyramidBlock(nn.Module):
    """A basic (two 3x3 convs) or bottleneck (1x1, 3x3, 1x1 with 4x output) residual branch; the
    shortcut is zero-padded to the wider output."""

    def __init__(self, in_planes: int, planes: int, stride: int, bottleneck: bool, shakedrop: nn.Module) -> None:
        super().__init__()
        if bottleneck:
            layers = [nn.BatchNorm2d(in_planes), nn.Conv2d(in_planes, planes, 1, bias=False),
                      nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
                      nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False),
                      nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
                      nn.Conv2d(planes, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes)]
        else:
            layers = [nn.BatchNorm2d(in_planes), nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False),
                      nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
                      nn.Conv2d(planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes)]
        self.branch = nn.Sequential(*layers)
        self.shakedrop = shakedrop
        self.pool = nn.AvgPool2d(2, stride=2, ceil_mode=True) if stride != 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shakedrop(self.branch(x))
        shortcut = self.pool(x)
        return out + F.pad(shortcut, (0, 0, 0, 0, 0, out.shape[1] - shortcut.shape[1]))


class PyramidNet(nn.Module):
    """PyramidNet-``depth`` with widening factor ``alpha``; basic blocks (depth = 6n + 2) or
    ``bottleneck`` ones (depth = 9n + 2). ``shakedrop_final_survival`` (the paper's ``p_L``, 0.5)
    turns ShakeDrop on, with the linear decay rule ``p_l = 1 - (l / L)(1 - p_L)`` over the ``L``
    blocks; ``None`` leaves it off."""

    def __init__(self, depth: int, alpha: float, num_classes: int, in_channels: int = 3, bottleneck: bool = False,
                 shakedrop_final_survival: float | None = None) -> None:
        super().__init__()
        layers_per_block = 9 if bottleneck else 6
        if (depth - 2) % layers_per_block:
            raise ConfigError(f"model.depth of a PyramidNet must be {layers_per_block}n + 2 with "
                             f"{'bottleneck' if bottleneck else 'basic'} blocks (got {depth}).")
        per_stage = (depth - 2) // layers_per_block
        total_blocks = 3 * per_stage
        step = alpha / total_blocks
        expansion = 4 if bottleneck else 1
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, width, in_planes = [], 16.0, 16
        for block_index in range(total_blocks):
            width += step
            stride = 2 if block_index in (per_stage, 2 * per_stage) else 1
            shakedrop = (nn.Identity() if shakedrop_final_survival is None else
                         ShakeDrop(1.0 - (block_index + 1) / total_blocks * (1.0 - shakedrop_final_survival)))
            blocks.append(PyramidBlock(in_planes, round(width), stride, bottleneck, shakedrop))
            in_planes = round(width) * expansion
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
