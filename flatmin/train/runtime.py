"""Where and how a job computes, decided once: the device, this process's place among DDP
replicas, the precision (its autocast and fp16 loss scaler), and how the model and the batches are
placed (channels-last, DDP, ``torch.compile``).

The run entry builds one :class:`Runtime` from the ``trainer`` config and hands it to the trainer;
the benchmarks and the sharpness command build theirs with :meth:`Runtime.local`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ContextManager

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from flatmin.train.distributed import Replica, init_replica
from flatmin.train.precision import LossScaler, autocast, resolve_device, resolve_precision


@dataclass(frozen=True)
class Runtime:
    """The device, the replica, the precision and the model's placement of one process."""

    device: torch.device
    precision: str
    replica: Replica = Replica()
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Runtime:
        """The runtime the ``trainer`` config asks for; joins the process group when launched as
        several processes (torchrun, SLURM tasks), each replica on its own GPU."""
        device = resolve_device(cfg.device)
        replica = init_replica(device.type)
        if replica.distributed and device.type == "cuda":
            device = torch.device("cuda", replica.local_rank)
            torch.cuda.set_device(device)
        return cls(device, resolve_precision(cfg.precision, device), replica, cfg.channels_last, cfg.compile,
                   cfg.compile_mode, cfg.compile_backend)

    @classmethod
    def local(cls, device: str = "auto", precision: str = "auto", channels_last: bool = False) -> Runtime:
        """A single process's runtime (benchmarks, measurements)."""
        resolved = resolve_device(device)
        return cls(resolved, resolve_precision(precision, resolved), channels_last=channels_last)

    def autocast(self) -> ContextManager[Any]:
        """The autocast of this precision on this device (nothing for fp32)."""
        return autocast(self.device, self.precision)

    def loss_scaler(self) -> LossScaler:
        """A loss scaler, inert unless the precision is fp16."""
        return LossScaler(self.device, self.precision == "fp16")

    def prepare_model(self, module: nn.Module) -> nn.Module:
        """What runs forward: ``module`` on the device (channels-last if asked), DDP-wrapped across
        replicas and compiled when asked. The optimizer holds ``module``'s parameters, which every
        wrapper shares."""
        model = module.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.replica.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        if self.compile:
            model = torch.compile(model, mode=self.compile_mode, backend=self.compile_backend)
        return model

    def to_device(self, inputs: Tensor | dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        """A batch's inputs (a tensor, or a dict of them) on the device; images channels-last if asked."""
        if isinstance(inputs, dict):
            return {key: value.to(self.device, non_blocking=True) for key, value in inputs.items()}
        inputs = inputs.to(self.device, non_blocking=True)
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs
