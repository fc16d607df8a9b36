"""Wide ResNets (Zagoruyko & Komodakis, BMVC 2016) as trained in the SAM paper: WRN-16-8, WRN-28-10.

Three groups of ``(depth - 4) / 6`` pre-activation basic blocks with 16k, 32k and 64k channels
(k = ``widen_factor``), dropout between the two convolutions of a block, a 1x1 convolution on the
shortcut where the shape changes, and the official initialisation (He normal, fan-out, for the
convolutions; zero biases). WRN-28-10 on CIFAR-10 has 36.5M parameters.
"""

from __future__ import annotations

from torch import nn

from flatmin.models.preact_resnet import PreActResNet


def wide_resnet(depth: int, widen_factor: int, num_classes: int, in_channels: int = 3,
                dropout: float = 0.0) -> PreActResNet:
    """WRN-``depth``-``widen_factor`` for 32x32 inputs; ``depth`` = 6n + 4."""
    if (depth - 4) % 6:
        raise ValueError(f"wide_resnet depth must be 6n + 4 (got {depth}).")
    model = PreActResNet(num_classes, in_channels, stem_width=16,
                         widths=(16 * widen_factor, 32 * widen_factor, 64 * widen_factor),
                         blocks_per_stage=(depth - 4) // 6, dropout=dropout)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
    return model
