"""The DataLoaders: batches of in-memory splits, and ``dataset.num_workers: auto`` (the process's
CPUs, shared among the training processes of the node)."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from flatmin.data import DataSplits, EpochShuffleSampler, build_loaders, resolve_num_workers


class CountingTensors(TensorDataset):
    """A TensorDataset that counts how often it is indexed."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.calls = 0

    def __getitem__(self, index):
        self.calls += 1
        return super().__getitem__(index)


def test_an_in_memory_split_is_gathered_a_batch_at_a_time_with_the_per_sample_loaders_batches():
    generator = torch.Generator().manual_seed(0)
    data = (torch.randn(100, 3, 4, 4, generator=generator), torch.randint(0, 5, (100,), generator=generator))
    train, val = CountingTensors(*data), CountingTensors(*data)
    loaders = build_loaders(DataSplits(train, val, None, num_classes=5), batch_size=16, eval_batch_size=30,
                            num_workers=0, seed=3, rank=1, world_size=2)
    per_sample = DataLoader(TensorDataset(*data), batch_size=16, drop_last=True,
                            sampler=EpochShuffleSampler(100, 3, rank=1, world_size=2, batch_size=16))
    for epoch, skip in [(0, 0), (4, 1)]:                   # a resumed epoch skips what its checkpoint took
        loaders.train.sampler.set_epoch(epoch, skip_batches=skip)
        per_sample.sampler.set_epoch(epoch, skip_batches=skip)
        train.calls = 0
        batches, expected = list(loaders.train), list(per_sample)
        assert len(loaders.train) == 3 - skip and len(batches) == len(expected) == 3 - skip
        assert train.calls == len(batches)                 # one index per batch, not one per sample
        for (x, y), (x_expected, y_expected) in zip(batches, expected):
            assert torch.equal(x, x_expected) and torch.equal(y, y_expected) and x.is_contiguous()
    evaluated = list(loaders.val)
    assert [len(y) for _, y in evaluated] == [30, 30, 30, 10] and val.calls == 4
    assert torch.equal(torch.cat([x for x, _ in evaluated]), data[0])


def test_an_integer_is_taken_as_is():
    assert resolve_num_workers(0) == 0
    assert resolve_num_workers(3) == 3


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is a Linux call")
def test_auto_shares_this_process_cpus_among_the_node_replicas(monkeypatch: pytest.MonkeyPatch):
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_num_workers("auto") == cpus
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_num_workers("auto") == max(1, cpus // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * cpus))
    assert resolve_num_workers("auto") == 1
