"""What every dataset builder returns, and the loaders built from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


@dataclass
class DataSplits:
    """The train/val/test splits of one dataset. ``val`` is None when the protocol has none."""

    train: Dataset
    val: Dataset | None
    test: Dataset
    num_classes: int


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader | None
    test: DataLoader


class EpochShuffleSampler(Sampler[int]):
    """A shuffled order that depends only on ``(seed, epoch)``.

    Resuming at an epoch boundary therefore replays exactly the order an uninterrupted run
    would have seen; call :meth:`set_epoch` before iterating (as with ``DistributedSampler``).
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


def build_loaders(splits: DataSplits, batch_size: int, eval_batch_size: int, num_workers: int,
                  seed: int, pin_memory: bool = False) -> Loaders:
    """Wrap the splits in DataLoaders: shuffled, full batches for training; in order for eval."""

    def eval_loader(dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=eval_batch_size, shuffle=False,
                          num_workers=num_workers, pin_memory=pin_memory,
                          persistent_workers=num_workers > 0)

    train = DataLoader(splits.train, batch_size=batch_size,
                       sampler=EpochShuffleSampler(len(splits.train), seed),
                       num_workers=num_workers, pin_memory=pin_memory, drop_last=True,
                       persistent_workers=num_workers > 0)
    val = eval_loader(splits.val) if splits.val is not None else None
    return Loaders(train=train, val=val, test=eval_loader(splits.test))
