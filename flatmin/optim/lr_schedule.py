"""Learning-rate schedules, stepped once per optimizer step (constant within an epoch with
``interval: epoch``), each with an optional linear warmup.

Lengths are given in epochs in the config (fractions allowed) and converted to steps here, so a
schedule means the same thing whatever the batch size. The factor multiplies every param group's
initial ``lr``; a multi-pass method shares its param groups with its base optimizer, so the
schedule reaches both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import SWALR


def cosine(progress: float, min_factor: float) -> float:
    """Cosine decay from 1 to ``min_factor`` as ``progress`` goes from 0 to 1 (Loshchilov & Hutter, 2017)."""
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def lr_factor(cfg: DictConfig, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """The multiplier of the initial learning rate at optimizer step ``step`` (0-based).

    ``interval: epoch`` holds the factor for a whole epoch, at its value of the epoch's first step,
    as a schedule stepped once per epoch does (GAM's and davda54/sam's releases); ``step`` (the
    default) changes it every optimizer step. The ``step`` schedule multiplies by ``gamma`` every
    ``step_size`` epochs, or, with ``milestones``, at each of those fractions of the run (davda54/sam's
    ``StepLR``: ×0.2 at 30%, 60% and 80% of the epochs). The config's values are read once, here:
    the function runs every optimizer step, where a ``DictConfig`` read costs microseconds."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    total = epochs * steps_per_epoch
    per_epoch = cfg.interval == "epoch"
    milestones = [round(fraction * epochs * steps_per_epoch) for fraction in cfg.get("milestones") or []]
    name, min_factor, gamma, step_size = cfg.name, cfg.get("min_lr_factor"), cfg.get("gamma"), cfg.get("step_size")

    def factor(step: int) -> float:
        if per_epoch:
            step -= step % steps_per_epoch
        if step < warmup:
            return (step + 1) / warmup
        if name == "cosine":
            return cosine((step - warmup) / max(1, total - warmup), min_factor)
        if name == "linear":
            return 1.0 - (1.0 - min_factor) * min(1.0, (step - warmup) / max(1, total - warmup))
        if name == "step":
            passed = sum(step >= milestone for milestone in milestones) if milestones else \
                math.floor(step / (step_size * steps_per_epoch))
            return gamma ** passed
        return 1.0

    return factor


def final_lr_factor(cfg: DictConfig, steps_per_epoch: int, epochs: int) -> float:
    """Where the schedule ends, as a multiple of the initial learning rate: its factor after the
    last optimizer step (cosine: exactly ``min_lr_factor``; constant: 1). A hyperparameter scheduled
    ``proportional_to_lr`` reaches its floor there (GSAM's ``lr_min``, ``flatmin/optim/hyper_schedule.py``)."""
    return lr_factor(cfg, steps_per_epoch, epochs)(epochs * steps_per_epoch)


def build_scheduler(cfg: DictConfig, optimizer: Optimizer, steps_per_epoch: int, epochs: int) -> LambdaLR:
    """A per-step ``LambdaLR`` for the ``scheduler`` config group (cosine, linear, step or constant)."""
    return LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch, epochs))


@dataclass(frozen=True)
class SwaSchedule:
    """``optimizer.averaging.swa_lr``: after the averaging's ``start`` the trainer leaves the run's LR
    schedule for ``torch.optim.swa_utils.SWALR``, stepped once per epoch (torch's SWA example): it
    anneals each group's LR from where the run's schedule left it to ``swa_lr`` over
    ``anneal_epochs`` epochs (``cos`` or ``linear``), then holds it."""

    swa_lr: float
    anneal_epochs: int
    anneal_strategy: str

    def build(self, optimizer: Optimizer) -> SWALR:
        return SWALR(optimizer, self.swa_lr, self.anneal_epochs, self.anneal_strategy)


def build_swa_schedule(optimizer_cfg: Mapping[str, Any]) -> SwaSchedule | None:
    """The SWA LR schedule of an ``optimizer`` config (``averaging.kind: swa`` with ``swa_lr``), or None."""
    averaging = optimizer_cfg.get("averaging") or {}
    if averaging.get("kind") != "swa" or averaging.get("swa_lr") is None:
        return None
    return SwaSchedule(averaging["swa_lr"], averaging["anneal_epochs"], averaging["anneal_strategy"])
