"""``dataset.num_workers: auto``: the process's CPUs, shared among the training processes of the node."""

from __future__ import annotations

import os

import pytest

from flatmin.data import resolve_num_workers


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
