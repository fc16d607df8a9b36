"""DataLoaders over a dataset's splits: shuffled full batches for training in the (seed, epoch)
order of :class:`~flatmin.data.sampler.EpochShuffleSampler`, whole splits in order for evaluation.
``flatmin.data.make_loaders`` picks these or the device-resident ones (``device_loader.py``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler, TensorDataset

from flatmin.data.sampler import EpochShuffleSampler
from flatmin.data.splits import DataSplits


@dataclass
class Loaders:
    """A run's loaders: training, validation and test (None where the dataset has no such split),
    and the further evaluation splits by metric prefix (MNLI's ``val_mismatched``)."""

    train: DataLoader
    val: DataLoader | None
    test: DataLoader | None
    extra_val: dict[str, DataLoader] = field(default_factory=dict)


def resolve_num_workers(value: int | str) -> int:
    """``dataset.num_workers``: an integer as is; ``auto`` is the CPUs this process may use, shared
    among the training processes on this node (torchrun's ``LOCAL_WORLD_SIZE``), at least one.
    A GPU needs them: on an H200 host, 4 workers fed ResNet-18 a third of what it can consume
    (docs/benchmarks.md)."""
    if value != "auto":
        return int(value)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


class BatchesOf(BatchSampler):
    """The index batches of ``sampler`` as index tensors, each handed to the dataset whole
    (``dataset[indices]``: indexing by a tensor, a list of ints costs 15 times as much); forwards
    :meth:`set_epoch` to ``sampler``, which the trainer calls on ``loader.sampler``."""

    def __iter__(self) -> Iterator[torch.Tensor]:  # type: ignore[override]
        return (torch.tensor(batch) for batch in super().__iter__())

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.sampler.set_epoch(epoch, skip_batches)


def build_loaders(splits: DataSplits, batch_size: int, eval_batch_size: int, num_workers: int,
                  seed: int, pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> Loaders:
    """Wrap the splits in DataLoaders: shuffled, full batches for training (``batch_size`` per
    replica, each replica its share); every replica evaluates whole splits, in order.

    A split held in memory as tensors (a ``TensorDataset``: digits) is gathered a batch at a time,
    one index per tensor, instead of sample by sample and stacked: the same rows in the same order,
    bit for bit, without the per-sample cost (135 µs a batch of 64 on digits: the trainer's largest
    cost beside the step itself in the quick start on a CPU)."""

    def loader(dataset: Dataset, sampler: Sampler[int], size: int, drop_last: bool) -> DataLoader:
        workers = {"num_workers": num_workers, "pin_memory": pin_memory, "persistent_workers": num_workers > 0}
        if isinstance(dataset, TensorDataset) and splits.collate is None:
            return DataLoader(dataset, batch_size=None, sampler=BatchesOf(sampler, size, drop_last), **workers)
        return DataLoader(dataset, batch_size=size, sampler=sampler, drop_last=drop_last, collate_fn=splits.collate,
                          **workers)

    def eval_loader(dataset: Dataset | None) -> DataLoader | None:
        return None if dataset is None else loader(dataset, SequentialSampler(dataset), eval_batch_size, False)

    train = loader(splits.train, EpochShuffleSampler(len(splits.train), seed, rank, world_size, batch_size),
                   batch_size, True)
    return Loaders(train=train, val=eval_loader(splits.val), test=eval_loader(splits.test),
                   extra_val={prefix: eval_loader(dataset) for prefix, dataset in splits.extra_val.items()})
