"""Data-parallel training: process-group set-up from torchrun or SLURM, and the one all-reduce per step.

flatmin runs DDP the way the SAM paper and its JAX reference do: each replica computes its own
perturbation from its own mini-batch, every pass of a step runs under ``model.no_sync()`` (forward
and backward), and the final gradient ``G`` is averaged across replicas by a single all-reduce just
before the base step (``docs/optimizers.md``, "DDP"). ``dataset.batch_size`` is per replica.

Rank 0 alone writes the run directory, checkpoints and logs. Under torchrun all ranks share rank
0's Hydra run directory (:func:`share_run_dir_under_torchrun`); other ranks keep Hydra from writing
its own files there.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from datetime import datetime

import torch
import torch.distributed as dist
from torch import Tensor

#: The run-directory stamp every rank of one torchrun job uses (see flatmin/conf/hydra/default.yaml).
RUN_STAMP_VARIABLE = "FLATMIN_RUN_STAMP"


@dataclass(frozen=True)
class Replica:
    """Where this process sits in the job: rank among ``world_size`` replicas, GPU ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ


def _launched_by_slurm_tasks() -> bool:
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def init_replica(device_type: str) -> Replica:
    """Join (or start) the process group when launched as several processes; a single process is rank 0.

    torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``; a SLURM job with several
    tasks (the submitit launcher) has them derived from the SLURM environment by submitit. The
    backend is NCCL on CUDA, gloo on the CPU.
    """
    if not dist.is_initialized():
        if _launched_by_slurm_tasks() and not _launched_by_torchrun():
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        if not _launched_by_torchrun():
            return Replica()
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Replica(rank=dist.get_rank(), world_size=dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def share_run_dir_under_torchrun() -> None:
    """Called by ``train.py`` before Hydra starts: give every torchrun rank rank 0's run-dir stamp,
    and keep ranks other than 0 from writing Hydra's ``.hydra/`` folder and log file."""
    if not _launched_by_torchrun():
        return
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    stamp = [datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")]
    dist.broadcast_object_list(stamp, src=0)
    os.environ[RUN_STAMP_VARIABLE] = stamp[0]
    if dist.get_rank() != 0:
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]


def replica_seed(seed: int, rank: int) -> int:
    """Rank 0 uses the run's seed; other replicas derive their own, so dropout masks and NSO's
    noise differ per replica (the model's initial weights come from rank 0 through DDP)."""
    return seed + 104_729 * rank


def is_ddp(model: torch.nn.Module) -> bool:
    """Whether ``model`` is DDP-wrapped (looking through a ``torch.compile`` wrapper)."""
    return isinstance(getattr(model, "_orig_mod", model), torch.nn.parallel.DistributedDataParallel)


def gather_objects(obj: object, replica: Replica) -> list[object]:
    """``obj`` (tensors and plain values) from every replica, in rank order; ``[obj]`` for one process.

    Objects travel as ``torch.save`` bytes: ``all_gather_object`` cannot unpickle tensors itself.
    """
    if not replica.distributed:
        return [obj]
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    gathered: list[bytes] = [b""] * replica.world_size
    dist.all_gather_object(gathered, buffer.getvalue())
    return [torch.load(io.BytesIO(data), weights_only=True) for data in gathered]


def on_any_replica(flags: list[bool], replica: Replica, device: torch.device) -> list[bool]:
    """Each flag, true on every replica if it is on any (one all-reduce): decisions every replica
    must take together, such as stopping."""
    if not replica.distributed:
        return flags
    agreed = torch.tensor(flags, dtype=torch.float32, device=device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return [bool(flag) for flag in agreed.tolist()]


def barrier(replica: Replica) -> None:
    if replica.distributed:
        dist.barrier()


class GradientAverager:
    """Averages the gradients (and the fp16 overflow flag) over replicas with one all-reduce.

    The gradients are packed into one persistent flat buffer (one parameter-sized buffer, like
    DDP's own buckets), reduced with a single ``all_reduce`` and unpacked.
    """

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.flat: Tensor | None = None

    def __call__(self, grads: list[Tensor], found_inf: Tensor) -> None:
        """Replace every replica's ``grads`` by their mean; ``found_inf`` becomes 1 if any replica overflowed."""
        if self.flat is None:
            self.flat = torch.empty(sum(g.numel() for g in grads) + 1, dtype=grads[0].dtype, device=grads[0].device)
        views = [view.view(g.shape) for view, g in zip(self.flat[:-1].split([g.numel() for g in grads]), grads)]
        torch._foreach_copy_(views, grads)
        self.flat[-1:].copy_(found_inf.reshape(1))
        dist.all_reduce(self.flat)
        torch._foreach_mul_(views, 1.0 / self.world_size)
        torch._foreach_copy_(grads, views)
        found_inf.copy_(self.flat[-1].clamp(max=1.0).reshape(found_inf.shape))
