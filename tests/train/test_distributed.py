"""DDP on the CPU (gloo, 2 processes): the same numbers as one process, one all-reduce per step,
and only rank 0 writes files."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from flatmin.data import DataSplits, build_loaders
from flatmin.optim import BSAM, ESAM, RWP, SAM, FisherMaskSAM
from flatmin.step import Stepper
from tests.conftest import ROOT
from tests.optim.common import stepper_for

CPU = torch.device("cpu")


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def dataset() -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(torch.randn(96, 6, generator=generator, dtype=torch.float64),
                                          torch.randint(0, 3, (96,), generator=generator))


def stepper(model: nn.Module, optimizer, accumulate: int = 1) -> Stepper:
    return stepper_for(model, optimizer, accumulate)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker, *args, clear: tuple[Path, ...] = ()) -> None:
    """``worker(rank, 2, port, *args)`` on two processes over gloo. Tried twice, on a fresh port and
    with the folders in ``clear`` emptied the second time: on a loaded 2-core machine gloo's
    rendezvous or teardown has aborted a rank (SIGABRT, "terminate called without an active
    exception") once in many suite runs; the workers are deterministic, so a second try tests the
    same thing."""
    try:
        mp.spawn(worker, args=(2, free_port(), *args), nprocs=2)
    except mp.ProcessExitedException:
        for folder in clear:
            shutil.rmtree(folder, ignore_errors=True)
        mp.spawn(worker, args=(2, free_port(), *args), nprocs=2)


def sgd_epoch_worker(rank: int, world_size: int, port: int, out: Path) -> None:
    """One epoch of SGD with the real sharded loader, batch 8 per replica."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    module = mlp()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    model = DistributedDataParallel(module)
    data = dataset()
    loaders = build_loaders(DataSplits(data, None, data, 3), 8, 8, 0, seed=3, rank=rank, world_size=world_size)
    runner = stepper(model, optimizer)
    for x, y in loaders.train:
        runner.step(x, y)
    if rank == 0:
        torch.save([p.detach() for p in module.parameters()], out)
    dist.destroy_process_group()


def test_sgd_on_two_replicas_equals_one_process_with_twice_the_batch(tmp_path: Path):
    spawn(sgd_epoch_worker, tmp_path / "ddp.pt")
    module = mlp()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    data = dataset()
    loaders = build_loaders(DataSplits(data, None, data, 3), 16, 16, 0, seed=3)
    runner = stepper(module, optimizer)
    for x, y in loaders.train:
        runner.step(x, y)
    for p, q in zip(module.parameters(), torch.load(tmp_path / "ddp.pt")):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)


def sam_worker(rank: int, world_size: int, port: int, out: Path) -> None:
    """Three SAM steps, each replica on its own half of the batch; counts the all-reduces."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    calls = []
    real_all_reduce = dist.all_reduce

    def counting_all_reduce(*args, **kwargs):
        calls.append(1)
        return real_all_reduce(*args, **kwargs)

    dist.all_reduce = counting_all_reduce
    module = mlp()
    optimizer = SAM(module.parameters(), torch.optim.SGD, rho=0.3, lr=0.1)
    runner = stepper(DistributedDataParallel(module), optimizer)
    x, y = dataset().tensors
    perturbed = []
    real_take_pass = optimizer.take_pass

    def record_perturbed_point(closure):
        loss = real_take_pass(closure)
        perturbed.append(module[0].weight.detach().clone())
        return loss

    optimizer.take_pass = record_perturbed_point
    for step in range(3):
        rows = slice(16 * step, 16 * step + 16)
        runner.step(x[rows][rank::2], y[rows][rank::2])
    dist.all_reduce = real_all_reduce
    points = [None, None]
    dist.all_gather_object(points, perturbed[1])
    torch.save({"params": [p.detach() for p in module.parameters()], "all_reduces": len(calls),
                "points": points}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_sam_under_ddp_perturbs_per_replica_and_all_reduces_once_per_step(tmp_path: Path):
    spawn(sam_worker, tmp_path)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["all_reduces"] for r in results] == [3, 3]
    points = results[0]["points"]
    assert not torch.equal(points[0], points[1])            # each replica ascended its own way
    # Per-replica SAM averaged = one process accumulating the replicas' halves as micro-batches.
    module = mlp()
    runner = stepper(module, SAM(module.parameters(), torch.optim.SGD, rho=0.3, lr=0.1), accumulate=2)
    x, y = dataset().tensors
    for step in range(3):
        rows = slice(16 * step, 16 * step + 16)
        for rank in range(2):
            runner.step(x[rows][rank::2], y[rows][rank::2])
    for r in results:
        for p, q in zip(module.parameters(), r["params"]):
            assert torch.allclose(p, q, rtol=0, atol=1e-12)


def test_torchrun_shares_one_run_dir_written_by_rank_zero(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                             "train.py", "trainer.epochs=1", "trainer.progress_bar=false", "optimizer=sam"],
                            cwd=ROOT, env={**os.environ, "FLATMIN_LOG_DIR": str(tmp_path)}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["global_steps"] == 1078 // 2 // 64          # each replica takes half of every epoch
    log = (run_dir / "train.log").read_text()
    assert "replica 1 of 2" in log and "replica 2 of 2" not in log
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [".hydra", ".lock", "best.pt", "config.yaml", "last.pt", "metrics.jsonl", "summary.json", "train.log"])
    assert len(torch.load(run_dir / "last.pt", weights_only=True)["rng"]) == 2   # every replica's generators


#: Methods that need the extended closure, as the DDP rule test builds them: each replica runs the
#: method on its own shard with its own random stream. ESAM with beta < 1 and Fisher-mask SAM with
#: mask_every > 1 keep per-replica state (the SWP mask, the Fisher mask) that one process accumulating
#: the shards cannot hold, so they run here with beta = 1 and mask_every = 1.
PROTOCOL_METHODS = {
    "esam": lambda params: ESAM(params, torch.optim.SGD, rho=0.3, beta=1.0, gamma=0.5, lr=0.1),
    "rwp": lambda params: RWP(params, torch.optim.SGD, sigma=0.05, lam=0.5, lr=0.1),
    "fisher_mask_sam": lambda params: FisherMaskSAM(params, torch.optim.SGD, rho=0.3, mask_every=1, num_samples=4,
                                                    lr=0.1),
    "bsam_split": lambda params: BSAM(params, lr=0.1, rho=0.05, num_data=1000, batch_split=2),
}


def protocol_worker(rank: int, world_size: int, port: int, out: Path) -> None:
    """For each method that needs the extended closure, three steps with each replica on its own half
    of the batch, the random stream seeded per step and replica (one process group for all methods)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    x, y = dataset().tensors
    for name, factory in PROTOCOL_METHODS.items():
        module = mlp()
        runner = stepper(DistributedDataParallel(module), factory(module.parameters()))
        for step in range(3):
            rows = slice(16 * step, 16 * step + 16)
            torch.manual_seed(100 * step + rank)
            runner.step(x[rows][rank::2], y[rows][rank::2])
        torch.save([p.detach() for p in module.parameters()], out / f"{name}-rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def protocol_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("protocol")
    spawn(protocol_worker, out)
    return out


@pytest.mark.parametrize("name", list(PROTOCOL_METHODS))
def test_an_extended_closure_method_on_two_replicas_equals_one_process_accumulating_their_shards(
        protocol_runs: Path, name: str):
    """The documented rule for DDP (docs/optimizers.md, "The extended closure"): every call of the
    protocol sees the replica's own rows, and the final G is averaged across replicas; so 2 replicas
    × b rows equal one process accumulating the two shards as micro-batches, each drawing from its
    replica's random stream."""
    module = mlp()
    runner = stepper(module, PROTOCOL_METHODS[name](module.parameters()), accumulate=2)
    x, y = dataset().tensors
    for step in range(3):
        rows = slice(16 * step, 16 * step + 16)
        for rank in range(2):
            torch.manual_seed(100 * step + rank)
            runner.step(x[rows][rank::2], y[rows][rank::2])
    for rank in range(2):
        for p, q in zip(module.parameters(), torch.load(protocol_runs / f"{name}-rank{rank}.pt")):
            assert torch.allclose(p, q, rtol=0, atol=1e-12)


class Interrupted(Exception):
    """The fault injected into the second epoch of a run."""


def resume_worker(rank: int, world_size: int, port: int, out: Path, options: list[str]) -> None:
    """For each option, on 2 replicas: a straight 2-epoch run, and one killed in its second epoch then
    resumed (``trainer.resume=auto``), as ``run`` does it under torchrun."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    from flatmin.train import Trainer, run
    from tests.conftest import make_config

    real_train_epoch = Trainer.train_epoch

    def train_epoch_then_die(self, epoch):
        if epoch == 1:
            raise Interrupted("killed during epoch 2")
        return real_train_epoch(self, epoch)

    for option in options:
        overrides = (f"optimizer={option}", "trainer.epochs=2", "trainer.limit_train_batches=5")
        run(make_config(out / option / "straight", *overrides))
        interrupted = make_config(out / option / "resumed", *overrides)
        Trainer.train_epoch = train_epoch_then_die
        try:
            run(interrupted)
        except Interrupted:
            pass
        Trainer.train_epoch = real_train_epoch
        interrupted.trainer.resume = "auto"
        run(interrupted)
    dist.destroy_process_group()


def test_a_ddp_run_resumes_every_replica_s_own_method_state_bit_for_bit(tmp_path: Path):
    """VaSSO's d and ESAM's SWP mask differ between replicas (each builds them from its own
    gradients or draws); the checkpoint carries every replica's, so a resumed DDP run is bit for bit
    the uninterrupted one (with rank 0's state on both replicas it is not)."""
    options = ["vasso", "esam"]
    spawn(resume_worker, tmp_path, options, clear=tuple(tmp_path / option for option in options))
    for option in options:
        straight = torch.load(tmp_path / option / "straight" / "last.pt", weights_only=False)
        resumed = torch.load(tmp_path / option / "resumed" / "last.pt", weights_only=False)
        assert len(resumed["replica_optimizer_state"]) == 2
        for key, tensor in straight["model"].items():
            assert torch.equal(tensor, resumed["model"][key]), (option, key)
