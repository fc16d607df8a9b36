"""One replica of the Lightning DDP check, launched by ``torchrun --nproc-per-node 2`` (gloo): for each
method, a Lightning fit under ``strategy="ddp"`` through ``FlatminMixin`` and flatmin's ``Stepper`` on a
DDP-wrapped copy of the same network, each replica on its own batches. Writes, per method, the largest
difference between the two and the fit's ``global_step`` to ``<out>/rank<r>.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as L
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from flatmin.runtime import Runtime
from flatmin.step import Stepper
from tests.integrations.test_lightning import CASES, Net, batches, group_sizes, loader, network, optimizer, state

METHODS = ("sam", "esam", "bsam", "lookahead-sam")
ACCUMULATE = 2


def stepper_replica(case: str, data: list) -> list[torch.Tensor]:
    """flatmin's own DDP rules: every pass under no_sync, one average of G."""
    module = network()
    method = optimizer(case, module)
    scheduler = torch.optim.lr_scheduler.StepLR(method, step_size=2, gamma=0.5)
    stepper = Stepper(DistributedDataParallel(module), method, Runtime.local("cpu", "fp32"),
                      accumulate=ACCUMULATE, grad_clip_norm=1.0)
    batch = iter(data)
    for size in group_sizes(ACCUMULATE):
        for _ in range(size):
            torch.manual_seed(7)
            stepper.step(*next(batch), group_size=size)
        scheduler.step()
    return state(module)


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    data = batches(seed=10 + rank)                  # each replica its own batches
    results = {}
    for case in METHODS:
        assert case in CASES
        expected = stepper_replica(case, data)
        module = Net(case, ACCUMULATE)
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp", use_distributed_sampler=False,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0)
        trainer.fit(module, loader(data))
        difference = max((a - b).abs().max().item() for a, b in zip(expected, state(module.model)))
        results[case] = {"difference": difference, "global_step": trainer.global_step}
    (out / f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
