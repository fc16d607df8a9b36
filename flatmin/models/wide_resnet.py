"""Wide ResNets (Zagoruyko & Komodakis, BMVC 2016) as trained in the SAM paper: WRN-16-8, WRN-28-10.

Three groups of ``(depth - 4) / 6`` pre-activation basic blocks with 16k, 32k and 64k channels
(k = ``widen_factor``), dropout between the two convolutions of a block, a 1x1 convolution on the
shortcut where the shape changes, and the official initialisation (He normal, fan-out, for the
convolutions; zero biases). WRN-28-10 on CIFAR-10 has 36.5M parameters.

``init`` picks the initialisation of a released training script: ``official`` (above; the head's
weight torch's default), ``davda54`` (davda54/sam ``example/model/wide_res_net.py``: He normal
fan-in convolutions, a zero head) or ``sam_jax`` (google-research/sam ``models/utils.py``: He normal
fan-out convolutions, a head weight uniform in ±1/√classes).
"""

from __future__ import annotations

from torch import nn

from flatmin.errors import ConfigError
from flatmin.models.preact_resnet import PreActResNet


INITS = ("official", "davda54", "sam_jax")


def wide_resnet(depth: int, widen_factor: int, num_classes: int, in_channels: int = 3,
                dropout: float = 0.0, init: str = "official") -> PreActResNet:
    """WRN-``depth``-``widen_factor`` for 32x32 inputs; ``depth`` = 6n + 4; ``init`` one of ``INITS``."""
    if (depth - 4) % 6:
        raise ConfigError(f"model.depth of a wide ResNet must be 6n + 4 (got {depth}).")
    if init not in INITS:
        raise ConfigError(f"model.init must be one of {', '.join(INITS)} (got {init!r}).")
    model = PreActResNet(num_classes, in_channels, stem_width=16,
                         widths=(16 * widen_factor, 32 * widen_factor, 64 * widen_factor),
                         blocks_per_stage=(depth - 4) // 6, dropout=dropout)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in" if init == "davda54" else "fan_out",
                                    nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
            if init == "davda54":
                nn.init.zeros_(module.weight)
            elif init == "sam_jax":
                nn.init.uniform_(module.weight, -num_classes ** -0.5, num_classes ** -0.5)
    return model
