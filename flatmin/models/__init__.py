"""Models. Each ``flatmin/conf/model/*.yaml`` names its class or factory in ``_target_`` and takes the
dataset's ``num_classes`` and ``in_channels`` by interpolation, so the resolved config shows
exactly what was built.

CIFAR-stem networks (32x32 inputs): :class:`CifarResNet` (ResNet-18/34/50), :func:`preact_resnet18`,
:func:`wide_resnet` (WRN-16-8, WRN-28-10), :class:`PyramidNet` (PyramidNet-110; PyramidNet-272 with
or without ShakeDrop). Pretrained factories, imported only when a config names them (timm and
transformers take seconds to import): ``timm_factory.create_timm_model`` (any timm model, the NSO
ResNet-34) and ``hf_factory.SequenceClassifier`` (BERT-family models from transformers).
"""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from flatmin.errors import FlatminError

from flatmin.models.preact_resnet import PreActResNet, preact_resnet18
from flatmin.models.pyramidnet import PyramidNet
from flatmin.models.resnet_cifar import CifarResNet
from flatmin.models.small_cnn import SmallCNN
from flatmin.models.wide_resnet import wide_resnet


def build_model(cfg: DictConfig) -> nn.Module:
    """Instantiate the model described by the ``model`` config group; a factory's one-sentence error
    (missing weights, unknown timm name) comes through as itself, not wrapped by Hydra."""
    try:
        return instantiate(cfg, _convert_="all")
    except InstantiationException as error:
        if isinstance(error.__cause__, FlatminError):
            raise error.__cause__ from None
        raise


__all__ = ["CifarResNet", "PreActResNet", "PyramidNet", "SmallCNN", "build_model", "preact_resnet18", "wide_resnet"]
