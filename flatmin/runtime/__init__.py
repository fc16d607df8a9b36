"""Where and how a process computes, decided once: the device (``device.py``), the precision with its
autocast and fp16 loss scaler (``precision.py``), this process's place among DDP replicas
(``distributed.py``), and how the model and the batches are placed (channels-last, DDP,
``torch.compile``).

The run entry builds one :class:`Runtime` from the ``trainer`` config; the sharpness command, the
scripts and the tests build theirs with :meth:`Runtime.local`. Whatever runs passes (the ``Stepper``,
evaluation) takes the precision from it: nothing else decides it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from flatmin.runtime.device import resolve_device
from flatmin.runtime.distributed import Replica, init_replica
from flatmin.runtime.precision import Precision


@dataclass(frozen=True)
class Runtime:
    """The device, the precision, the replica and the model's placement of one process."""

    device: torch.device
    precision: Precision
    replica: Replica = Replica()
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Runtime:
        """The runtime the ``trainer`` config asks for; joins the process group when launched as
        several processes (torchrun, SLURM tasks), each replica on its own GPU."""
        device = resolve_device(cfg["device"])
        replica = init_replica(device.type)
        if replica.distributed and device.type == "cuda":
            device = torch.device("cuda", replica.local_rank)
            torch.cuda.set_device(device)
        return cls(device, Precision.resolve(cfg["precision"], device), replica, cfg["channels_last"], cfg["compile"],
                   cfg["compile_mode"], cfg["compile_backend"])

    @classmethod
    def local(cls, device: str = "auto", precision: str = "auto", **placement: Any) -> Runtime:
        """A single process's runtime (the sharpness command, scripts, tests); ``placement`` is
        ``channels_last`` and the ``compile`` settings."""
        resolved = resolve_device(device)
        return cls(resolved, Precision.resolve(precision, resolved), **placement)

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


__all__ = ["Precision", "Replica", "Runtime", "resolve_device"]
