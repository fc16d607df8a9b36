"""One place builds a run from its composed config: the trainer's typed settings and the run's parts.

:func:`assemble` is how the training command (``flatmin/train/run.py``), the sharpness command and
the scripts under ``scripts/`` get a run: the splits and their loaders, the task with its training
loss, the model placed by the :class:`~flatmin.runtime.Runtime`, the optimizer (built once, knowing
the training split's size and the steps of an epoch), the ``Stepper`` that drives it, and the LR and
hyperparameter schedules, always in that order, so that a seeded caller draws the same initial
weights. :func:`assemble_stepper` is its model-to-Stepper part, for models and batches that come
from elsewhere (the benchmarks' fixed batches). ``trainer.budget_passes`` is settled here, from the
optimizer built: the epochs it buys are in ``Parts.settings`` and in the recorded ``Parts.config``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from flatmin.data import DataSplits, Loaders, build_dataset, make_loaders
from flatmin.data.task import Task
from flatmin.errors import ConfigError
from flatmin.models import build_model
from flatmin.optim import HyperparameterSchedule, WeightAveraging, build_hyper_schedule, build_optimizer
from flatmin.optim.lr_schedule import SwaSchedule, build_scheduler, build_swa_schedule, final_lr_factor
from flatmin.rundir import monitor_mode
from flatmin.runtime import Runtime
from flatmin.step import Stepper


@dataclass(frozen=True)
class TrainerSettings:
    """What the training loop reads of ``cfg.trainer``, typed and resolved once (the loop reads no
    config). ``epochs`` is the settled count (a pass budget's), ``monitor_mode`` ``min`` or ``max``."""

    epochs: int
    accumulate_grad_batches: int
    grad_clip_norm: float | None
    monitor: str
    monitor_mode: str
    divergence_threshold: float | None
    test_every_epoch: bool
    log_every_n_steps: int
    progress_bar: bool
    limit_train_batches: int | None
    limit_eval_batches: int | None
    checkpoint_every_n_steps: int | None
    checkpoint_every_minutes: float | None
    budget_seconds: float | None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TrainerSettings:
        """The settings of a ``trainer`` config (``trainer.epochs`` as given: see :func:`assemble`)."""
        values = {field.name: cfg[field.name] for field in fields(cls)}
        return cls(**{**values, "monitor_mode": monitor_mode(cfg["monitor"], cfg["monitor_mode"])})

    def micro_batches_per_epoch(self, train_batches: int) -> int:
        """Training micro-batches per epoch after ``limit_train_batches``."""
        return min(train_batches, self.limit_train_batches or train_batches)

    def steps_per_epoch(self, train_batches: int) -> int:
        """Optimizer steps per epoch: one per ``accumulate_grad_batches`` micro-batches (the last
        group of an epoch may be shorter)."""
        return math.ceil(self.micro_batches_per_epoch(train_batches) / self.accumulate_grad_batches)


def epochs_within_budget(cfg: Mapping[str, Any], optimizer: Optimizer) -> int:
    """``trainer.epochs``, or with ``trainer.budget_passes`` the epochs that budget buys ``optimizer``:
    the budget over its passes per step, on average over a run (LookSAM: 1 + 1/k), so that methods
    are compared at equal compute (SGD gets twice SAM's epochs, four times GAM's)."""
    budget = cfg.get("budget_passes")
    if budget is None:
        return cfg["epochs"]
    return max(1, int(budget // getattr(optimizer, "mean_passes_per_step", 1)))


def check_averaging_starts(optimizer: Optimizer, steps_per_epoch: int, epochs: int) -> None:
    """A weight average whose first update (after base step ``start + every``) comes after the run's
    last step would leave the training weights evaluated as if averaged: a :class:`ConfigError`."""
    if isinstance(optimizer, WeightAveraging) and optimizer.start + optimizer.every > steps_per_epoch * epochs:
        raise ConfigError(f"optimizer.averaging would average nothing: its first update comes after base step "
                          f"{optimizer.start + optimizer.every} and the run takes {steps_per_epoch * epochs} steps "
                          f"({epochs} × {steps_per_epoch}); lower optimizer.averaging.start or every, or train "
                          "longer.")


@dataclass
class Parts:
    """A run's parts, each built once by :func:`assemble`. ``module`` is the user's network (its
    weights, checkpoints); the ``stepper`` holds what runs forward (``model``: placed, maybe
    DDP-wrapped or compiled), the ``optimizer`` over ``module``'s parameters and the training loss."""

    config: dict[str, Any]
    settings: TrainerSettings
    splits: DataSplits
    loaders: Loaders
    task: Task
    module: nn.Module
    stepper: Stepper
    lr_schedule: LRScheduler
    hyper_schedule: HyperparameterSchedule
    swa_schedule: SwaSchedule | None

    @property
    def model(self) -> nn.Module:
        return self.stepper.model

    @property
    def optimizer(self) -> Optimizer:
        return self.stepper.optimizer


def assemble_stepper(module: nn.Module, optimizer_cfg: Mapping[str, Any], runtime: Runtime,
                     loss_fn: Callable[..., Tensor] = F.cross_entropy, accumulate: int = 1,
                     grad_clip_norm: float | None = None, train_size: int | None = None,
                     steps_per_epoch: int | None = None) -> Stepper:
    """``module`` on the runtime's device, the ``optimizer`` config's optimizer over its parameters
    (``build_optimizer``: ``train_size`` and ``steps_per_epoch`` where the method needs them), then
    the model placed by the runtime (channels-last, DDP, compile: every wrapper shares the
    parameters), and the ``Stepper`` driving them in the runtime's precision."""
    optimizer = build_optimizer(optimizer_cfg, module.to(runtime.device), train_size=train_size,
                                steps_per_epoch=steps_per_epoch)
    return Stepper(runtime.prepare_model(module), optimizer, runtime, loss_fn, accumulate, grad_clip_norm)


def assemble(cfg: DictConfig, runtime: Runtime) -> Parts:
    """The parts of the run ``cfg`` (a composed root config) describes, for this process's ``runtime``
    (under DDP each replica loads its own share of the training split). A training split with no
    full batch is a :class:`ConfigError`; so is what the optimizer's build refuses."""
    trainer = cfg.trainer
    settings = TrainerSettings.from_config(trainer)
    splits = build_dataset(cfg.dataset)
    replica = runtime.replica
    loaders = make_loaders(splits, cfg.dataset, runtime.device, cfg.seed, replica.rank, replica.world_size)
    if len(loaders.train) == 0:
        shared = f" shared by {replica.world_size} replicas" if replica.distributed else ""
        raise ConfigError(f"dataset.batch_size ({cfg.dataset.batch_size}) is larger than the training split "
                          f"({len(splits.train)} examples{shared}), so an epoch has no full batch; lower "
                          "dataset.batch_size.")
    micro_batches = settings.micro_batches_per_epoch(len(loaders.train))
    if settings.accumulate_grad_batches > micro_batches:
        raise ConfigError(f"trainer.accumulate_grad_batches ({settings.accumulate_grad_batches}) is more than the "
                          f"{micro_batches} micro-batches of an epoch, so every epoch would take one shortened step; "
                          "lower it to at most that.")
    steps_per_epoch = settings.steps_per_epoch(len(loaders.train))
    task = Task.from_config(cfg.dataset)
    module = build_model(cfg.model)
    stepper = assemble_stepper(module, cfg.optimizer, runtime, task.loss_fn(trainer.label_smoothing,
                                                                            trainer.label_smoothing_form),
                               settings.accumulate_grad_batches, settings.grad_clip_norm,
                               train_size=len(splits.train), steps_per_epoch=steps_per_epoch)
    epochs = epochs_within_budget(trainer, stepper.optimizer)
    check_averaging_starts(stepper.optimizer, steps_per_epoch, epochs)
    lr_schedule = build_scheduler(cfg.scheduler, stepper.optimizer, steps_per_epoch, epochs)
    hyper_schedule = build_hyper_schedule(cfg.optimizer, stepper.optimizer, steps_per_epoch * epochs,
                                          final_lr_factor(cfg.scheduler, steps_per_epoch, epochs), steps_per_epoch)
    config = OmegaConf.to_container(cfg, resolve=True)
    config["trainer"]["epochs"] = epochs
    return Parts(config, replace(settings, epochs=epochs), splits, loaders, task, module, stepper, lr_schedule,
                 hyper_schedule, build_swa_schedule(cfg.optimizer))
