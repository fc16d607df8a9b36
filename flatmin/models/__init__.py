"""Models. Each ``conf/model/*.yaml`` names its class or factory in ``_target_`` and takes the
dataset's ``num_classes`` and ``in_channels`` by interpolation, so the resolved config shows
exactly what was built."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from flatmin.models.small_cnn import SmallCNN


def build_model(cfg: DictConfig) -> nn.Module:
    """Instantiate the model described by the ``model`` config group."""
    return instantiate(cfg, _convert_="all")


__all__ = ["SmallCNN", "build_model"]
