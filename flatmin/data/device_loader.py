"""A data loader that keeps a whole small-image split on the training device.

For CIFAR-sized data the CPU pipeline (decode → PIL transforms → collate → copy) is slower than
a ResNet step on a modern GPU. Following airbench (Jordan, 2024), the split lives on the device
as one uint8 tensor; every batch is gathered, augmented (padded random crop, horizontal flip,
cutout) and normalised there (the trainer makes it channels-last), with the shuffling order drawn
on the device from a generator seeded by ``(seed, epoch)``. ``dataset.loader`` chooses: ``auto``
(this loader on CUDA when the dataset offers it), ``gpu`` or ``torch`` (the DataLoader path).

The augmentations draw the same distributions as the CPU path (torchvision's
``RandomCrop(size, padding=p)`` with zero fill: offsets uniform over ``0..2p`` in each axis;
``RandomHorizontalFlip``: probability 0.5; Cutout (DeVries & Taylor, 2017): a square of side
``cutout`` centred uniformly over the image, clipped at the borders, set to zero after
normalisation), so a run may switch paths without changing the experiment.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from flatmin.data.loaders import Loaders
from flatmin.data.sampler import epoch_seed
from flatmin.data.splits import Augmentation, DeviceData


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Zero-pad by ``padding`` and cut each image back to its size at a uniform random offset.

    Returns the crops and the (row, column) offsets, each in ``0..2·padding``.
    """
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), device=images.device, generator=generator)
    rows = (offsets[:, :1] + torch.arange(height, device=images.device))[:, :, None]       # B,H,1
    cols = (offsets[:, 1:] + torch.arange(width, device=images.device))[:, None, :]        # B,1,W
    index = torch.arange(batch, device=images.device)[:, None, None]
    crops = padded.permute(0, 2, 3, 1)[index, rows, cols].permute(0, 3, 1, 2)
    return crops, offsets


def random_flip(images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Mirror each image left-right with probability 0.5; returns the images and the flip mask."""
    flipped = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flipped[:, None, None, None], images.flip(3), images), flipped


def cutout(images: Tensor, size: int, generator: torch.Generator, probability: float = 1.0) -> Tensor:
    """Zero a ``size``×``size`` square centred uniformly over each image, clipped at the borders;
    with ``probability`` < 1 only on that share of the images (drawn after the centres)."""
    batch, _, height, width = images.shape
    centres = torch.stack([torch.randint(0, height, (batch,), device=images.device, generator=generator),
                           torch.randint(0, width, (batch,), device=images.device, generator=generator)], 1)
    rows = torch.arange(height, device=images.device)[None, :, None]
    cols = torch.arange(width, device=images.device)[None, None, :]
    top, left = (centres[:, 0] - size // 2)[:, None, None], (centres[:, 1] - size // 2)[:, None, None]
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    if probability < 1:
        inside &= (torch.rand(batch, device=images.device, generator=generator) < probability)[:, None, None]
    return images.masked_fill(inside[:, None], 0.0)


class DeviceLoader:
    """Batches of ``(images, labels)`` from tensors resident on ``device``.

    ``images`` is ``(N, C, H, W)``, uint8 (scaled to [0, 1] then normalised with ``mean``/``std``)
    or already-normalised floats (``mean``/``std`` None). With ``train`` the order is shuffled per
    epoch (call :meth:`set_epoch`, as with a ``DistributedSampler``), ``augmentation`` applies and
    the last incomplete batch is dropped; otherwise the order is fixed and every sample is seen.
    ``rank``/``world_size`` give each DDP replica its share of the training split.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, device: torch.device, *, train: bool,
                 seed: int = 0, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 augmentation: Augmentation = Augmentation(), rank: int = 0, world_size: int = 1) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.skip = 0
        self.augmentation = augmentation if train else Augmentation()
        self.rank = rank
        self.world_size = world_size
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) if mean is not None else None
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) if std is not None else None
        self.order_generator = torch.Generator(device=device)      # the same on every replica
        self.augment_generator = torch.Generator(device=device)    # different on every replica

    @property
    def sampler(self) -> "DeviceLoader":
        """The trainer calls ``loader.sampler.set_epoch``; this loader is its own sampler."""
        return self

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """The epoch to shuffle for, and how many of its batches a mid-epoch checkpoint had taken."""
        self.epoch = epoch
        self.skip = skip_batches

    def __len__(self) -> int:
        count = len(self.labels) // self.world_size
        return count // self.batch_size if self.train else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.order_generator.manual_seed(epoch_seed(self.seed, self.epoch))
        self.augment_generator.manual_seed(epoch_seed(self.seed, self.epoch) * 1_009 + self.rank + 1)
        count = len(self.labels)
        order = torch.randperm(count, device=self.device, generator=self.order_generator) if self.train else \
            torch.arange(count, device=self.device)
        order = order[:count - count % self.world_size][self.rank::self.world_size]
        for number, start in enumerate(range(0, len(self) * self.batch_size, self.batch_size)):
            index = order[start:start + self.batch_size]
            images = self.prepare(self.images[index])       # a skipped batch still draws its augmentation
            if number >= self.skip:
                yield images, self.labels[index]

    def prepare(self, images: Tensor) -> Tensor:
        """Scale, augment and normalise one batch, on the device."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        if self.augmentation.crop_padding:
            images, _ = random_crop(images, self.augmentation.crop_padding, self.augment_generator)
        if self.augmentation.flip:
            images, _ = random_flip(images, self.augment_generator)
        if self.mean is not None:
            images = (images - self.mean) / self.std
        if self.augmentation.cutout:
            images = cutout(images, self.augmentation.cutout, self.augment_generator,
                            self.augmentation.cutout_probability)
        return images


def build_device_loaders(data: DeviceData, batch_size: int, eval_batch_size: int, device: torch.device,
                         seed: int, rank: int = 0, world_size: int = 1) -> Loaders:
    """Device-resident loaders for every split of ``data`` (the training one sharded per replica)."""

    def loader(split: tuple[Tensor, Tensor] | None, train: bool) -> DeviceLoader | None:
        if split is None:
            return None
        return DeviceLoader(*split, batch_size if train else eval_batch_size, device, train=train, seed=seed,
                            mean=data.mean, std=data.std, augmentation=data.augmentation,
                            rank=rank if train else 0, world_size=world_size if train else 1)

    return Loaders(train=loader(data.train, True), val=loader(data.val, False), test=loader(data.test, False))
