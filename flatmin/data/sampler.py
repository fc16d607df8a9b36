"""The training order: a shuffle that depends only on ``(seed, epoch)``, so a resumed run replays it."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s shuffle (and of the device-resident loader's augmentations)."""
    return seed * 1_000_003 + epoch


class EpochShuffleSampler(Sampler[int]):
    """A shuffled order that depends only on ``(seed, epoch)``.

    Resuming therefore replays exactly the order an uninterrupted run would have seen: call
    :meth:`set_epoch` before iterating (as with ``DistributedSampler``), with ``skip_batches`` the
    batches of ``batch_size`` that a mid-epoch checkpoint's epoch had already taken. With
    ``world_size`` replicas, replica ``rank`` takes every ``world_size``-th index of the same
    permutation (the tail that does not divide evenly is dropped), so the replicas' batches
    together form the batches of a single process with ``world_size`` times the batch size.
    """

    def __init__(self, num_samples: int, seed: int, rank: int = 0, world_size: int = 1, batch_size: int = 1) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_samples, generator=generator)
        share = order[:self.num_samples // self.world_size * self.world_size][self.rank::self.world_size]
        return iter(share[self.skip:].tolist())

    def __len__(self) -> int:
        return self.num_samples // self.world_size - self.skip
