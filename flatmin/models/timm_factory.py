"""Any timm model by name (Wightman, pytorch-image-models), with a new head for the dataset's classes.

``pretrained`` is ``false`` (random initialisation), ``true`` (timm's default weights for ``name``,
from the Hugging Face hub, or its local cache) or the path of a local weights file (``.safetensors``,
``.pth``, ``.bin``) for the same architecture. timm drops the file's classifier when its class count
differs, so the head is always a fresh linear layer of ``num_classes`` outputs.
"""

from __future__ import annotations

import timm
from torch import nn

from flatmin.errors import ConfigError
from flatmin.pretrained import load_pretrained


def create_timm_model(name: str, num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
                      drop_rate: float = 0.0) -> nn.Module:
    """``timm.create_model(name)`` with ``num_classes`` outputs and weights as ``pretrained`` says."""
    if not timm.is_model(name.split(".")[0]):
        raise ConfigError(f"model.name must be a timm model name, e.g. resnet34 or vit_small_patch16_224 "
                          f"(got {name!r}; timm.list_models() lists them).")
    options = {"num_classes": num_classes, "in_chans": in_channels, "drop_rate": drop_rate}
    if pretrained is False:
        return timm.create_model(name, pretrained=False, **options)
    if pretrained is True:
        return load_pretrained(lambda: timm.create_model(name, pretrained=True, **options),
                               f"timm model {name}'s pretrained weights", name, "model.pretrained")
    return load_pretrained(lambda: timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": pretrained},
                                                     **options),
                           f"timm model {name}'s weights", pretrained, "model.pretrained")
