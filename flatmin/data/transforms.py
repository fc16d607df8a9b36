"""Image transforms: the CIFAR recipe of the SAM/GAM papers and the 224-px fine-tuning recipe of NSO.

CIFAR (``dataset.augment``): random crop 32 with 4-px zero padding and horizontal flip
(He et al., 2016); optionally AutoAugment's CIFAR-10 policy (Cubuk et al., CVPR 2019) or
RandAugment (Cubuk et al., 2020) before the tensor conversion, and Cutout (DeVries & Taylor, 2017)
after normalisation. Evaluation only normalises.

Fine-tuning: 224 px and ImageNet normalisation; training optionally uses RandomResizedCrop and a
flip (``dataset.augment.crop_flip``), otherwise the evaluation transform (resize to 256, centre
crop 224).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor
from torchvision import transforms as T

POLICIES: dict[str, Callable[[], Callable[[Any], Any]]] = {
    "autoaugment": lambda: T.AutoAugment(T.AutoAugmentPolicy.CIFAR10),
    "randaugment": lambda: T.RandAugment(),
}


class Cutout:
    """Zero a ``size`` x ``size`` square at a uniformly random centre of a (C, H, W) tensor; the
    square may extend past the border (DeVries & Taylor, 2017). With ``probability`` < 1 an image is
    left whole with the rest of the chance (davda54/sam ``example/utility/cutout.py``: p = 0.5).
    Uses torch's global generator."""

    def __init__(self, size: int, probability: float = 1.0) -> None:
        self.size = size
        self.probability = probability

    def __call__(self, image: Tensor) -> Tensor:
        if self.probability < 1 and torch.rand(()).item() >= self.probability:
            return image
        height, width = image.shape[-2:]
        y, x = torch.randint(height, ()).item(), torch.randint(width, ()).item()
        top, left = max(0, y - self.size // 2), max(0, x - self.size // 2)
        image = image.clone()
        image[..., top:y + (self.size + 1) // 2, left:x + (self.size + 1) // 2] = 0
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Grey or palette images (a few in Caltech-256 and CUB) as 3-channel RGB."""
    return image.convert("RGB")


def cifar_transforms(cfg: DictConfig) -> tuple[Callable[[Any], Tensor], Callable[[Any], Tensor]]:
    """(train, eval) transforms for CIFAR from ``cfg.augment`` and ``cfg.normalize``."""
    normalize = [T.ToTensor(), T.Normalize(cfg.normalize.mean, cfg.normalize.std)]
    train: list[Callable[[Any], Any]] = []
    if cfg.augment.crop_flip:
        train += [T.RandomCrop(cfg.image_size, padding=4), T.RandomHorizontalFlip()]
    if cfg.augment.policy is not None:
        train.append(POLICIES[cfg.augment.policy]())
    train += normalize
    if cfg.augment.cutout:
        train.append(Cutout(cfg.augment.cutout, cfg.augment.cutout_probability))
    return T.Compose(train), T.Compose(normalize)


def finetune_transforms(cfg: DictConfig) -> tuple[Callable[[Any], Tensor], Callable[[Any], Tensor]]:
    """(train, eval) transforms for the 224-px fine-tuning sets (``cfg.image_size``, ``cfg.resize``)."""
    normalize = [T.ToTensor(), T.Normalize(cfg.normalize.mean, cfg.normalize.std)]
    evaluation = T.Compose([to_rgb, T.Resize(cfg.resize), T.CenterCrop(cfg.image_size), *normalize])
    if not cfg.augment.crop_flip:
        return evaluation, evaluation
    train = T.Compose([to_rgb, T.RandomResizedCrop(cfg.image_size), T.RandomHorizontalFlip(), *normalize])
    return train, evaluation
