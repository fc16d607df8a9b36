"""One replica of the adapters' DDP check, launched by ``torchrun --nproc-per-node 2`` (gloo): for each
method, a fit through each host's DDP (Lightning's ``strategy="ddp"`` with ``FlatminMixin``; the
transformers Trainer with ``FlatminTrainer``) and flatmin's ``Stepper`` on a DDP-wrapped copy of the
same network on the same micro-batches, each replica on its own. Writes, per host and method, the
largest difference between the two and the number of optimizer steps to ``<out>/rank<r>.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as L
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import get_scheduler

from flatmin.integrations.hf import FlatminTrainer, forward_logits
from flatmin.runtime import Runtime
from flatmin.step import Stepper
from tests.integrations import test_hf, test_lightning

METHODS = ("sam", "esam", "bsam", "lookahead-sam")
ACCUMULATE = 2


def stepper_replica(module: nn.Module, method: torch.optim.Optimizer, schedule: Any, micro_batches: list,
                    group_sizes: list[int], forward: Callable | None = None) -> list[torch.Tensor]:
    """flatmin's own DDP rules on ``micro_batches`` in groups: every pass under no_sync, one average of G."""
    options = {"forward": forward} if forward else {}
    stepper = Stepper(DistributedDataParallel(module), method, Runtime.local("cpu", "fp32"), accumulate=ACCUMULATE,
                      grad_clip_norm=test_hf.MAX_GRAD_NORM if forward else 1.0, **options)
    batch = iter(micro_batches)
    for size in group_sizes:
        for _ in range(size):
            torch.manual_seed(7)
            stepper.step(*next(batch), group_size=size)
        schedule.step()
    return test_lightning.state(module)


def lightning_replica(case: str, rank: int) -> dict[str, float]:
    data = test_lightning.batches(seed=10 + rank)                     # each replica its own batches
    module = test_lightning.network()
    method = test_lightning.optimizer(case, module)
    expected = stepper_replica(module, method, torch.optim.lr_scheduler.StepLR(method, **test_lightning.LR_STEP),
                               data, test_lightning.group_sizes(ACCUMULATE))
    hosted = test_lightning.Net(case, ACCUMULATE)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp", use_distributed_sampler=False,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(hosted, test_lightning.loader(data))
    return {"difference": difference(expected, test_lightning.state(hosted.model)), "steps": trainer.global_step}


class Recording(FlatminTrainer):
    """Keeps the micro-batches this replica's share of the data loader gave it."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.seen.append(({"x": inputs["x"].clone()}, inputs["labels"].clone()))
        return super().training_step(model, inputs, num_items_in_batch)


def transformers_replica(case: str, out: Path) -> dict[str, float]:
    trainer = test_hf.hosted(case, out / case, ACCUMULATE, ddp_backend="gloo", trainer_class=Recording)
    trainer.seen = []
    trainer.train()
    groups = [min(ACCUMULATE, len(trainer.seen) - start) for start in range(0, len(trainer.seen), ACCUMULATE)]
    module = test_hf.model()
    method = test_hf.optimizer(case, module)
    schedule = get_scheduler("linear", method, num_warmup_steps=0, num_training_steps=len(groups))
    expected = stepper_replica(module, method, schedule, trainer.seen, groups, forward_logits)
    return {"difference": difference(expected, test_lightning.state(trainer.model)),
            "steps": trainer.state.global_step, "expected_steps": len(groups)}


def difference(expected: list[torch.Tensor], actual: list[torch.Tensor]) -> float:
    return max((a - b).abs().max().item() for a, b in zip(expected, actual))


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {"lightning": {case: lightning_replica(case, rank) for case in METHODS},
               "transformers": {case: transformers_replica(case, out) for case in METHODS}}
    (out / f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
