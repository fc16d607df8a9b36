"""The run entry behind ``train.py``: config → data → model → optimizer → Trainer → run directory.

``run(cfg)`` does one job and returns its summary (tests call it directly); ``main(cfg)`` is what
``train.py`` calls under Hydra: it turns a :class:`~flatmin.errors.FlatminError` into one sentence on
stderr and exit status 2, and returns the monitored validation metric for Hydra sweepers.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from flatmin.config import validate
from flatmin.data import DataSplits, build_dataset, make_loaders
from flatmin.data.metrics import Task
from flatmin.errors import FlatminError
from flatmin.models import build_model
from flatmin.optim import build_hyper_schedule, build_optimizer
from flatmin.sharpness import measure_run, select_parameters
from flatmin.train.checkpoint import load_checkpoint, write_json
from flatmin.train.distributed import Replica, init_replica, replica_seed
from flatmin.train.loggers import JsonlLogger, Loggers, WandbLogger
from flatmin.train.precision import resolve_device, resolve_precision
from flatmin.train.schedulers import build_scheduler
from flatmin.train.seeding import seed_everything
from flatmin.train.trainer import Trainer, optimizer_steps_per_epoch

log = logging.getLogger(__name__)


def resume_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint ``trainer.resume`` designates: ``auto`` is this run directory's ``last.pt``
    if there is one; a directory means its ``last.pt``; a file is taken as is."""
    if resume is None:
        return None
    if resume == "auto":
        candidate = run_dir / "last.pt"
        return candidate if candidate.is_file() else None
    path = Path(resume)
    return path / "last.pt" if path.is_dir() else path


def apply_pass_budget(cfg: DictConfig) -> None:
    """``trainer.budget_passes``: give each method ``budget_passes / passes per step`` epochs, so
    methods are compared at equal compute (SGD gets twice SAM's epochs, four times GAM's). The
    passes per step are the optimizer's own (built here on a throwaway parameter)."""
    budget = cfg.trainer.get("budget_passes")
    if budget is None:
        return
    passes = getattr(build_optimizer(cfg.optimizer, nn.Linear(1, 1)), "passes_per_step", 1)
    cfg.trainer.epochs = max(1, budget // passes)


def hydra_context() -> dict[str, Any]:
    """The job's name, its sweep (the W&B group) and the chosen config options, when under Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {"name": None, "group": None, "choices": {}, "multirun": False}
    hydra = HydraConfig.get()
    multirun = hydra.mode == RunMode.MULTIRUN
    return {
        "multirun": multirun,
        "name": f"{Path(hydra.sweep.dir).name}-{hydra.job.num}" if multirun else Path(hydra.runtime.output_dir).name,
        "group": Path(hydra.sweep.dir).name if multirun else None,
        "choices": {k: v for k, v in hydra.runtime.choices.items() if not k.startswith("hydra")},
    }


def open_loggers(cfg: DictConfig, run_dir: Path, config: dict[str, Any], checkpoint: dict[str, Any] | None,
                 checkpoint_dir: Path | None) -> Loggers:
    """metrics.jsonl always (continuing the resumed run's history), plus W&B when configured."""
    epoch = checkpoint["epoch"] if checkpoint else 0
    history = checkpoint_dir / "metrics.jsonl" if checkpoint_dir else None
    loggers: list[Any] = [JsonlLogger(run_dir / "metrics.jsonl", history, epoch)]
    if cfg.logger.get("wandb"):
        context = hydra_context()
        run_id = checkpoint["trainer"]["wandb_run_id"] if checkpoint else None
        loggers.append(WandbLogger(cfg.logger.wandb, config, run_dir, context["name"], context["group"], run_id))
    return Loggers(loggers)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train one job as configured and return its summary (also written to ``summary.json``).

    Whatever stops the job (bad input included) is recorded as ``"status": "failed"`` in
    ``summary.json`` before the exception propagates, so a sweep's failures stay visible.
    """
    run_dir = Path(cfg.paths.output_dir)
    replica = init_replica(resolve_device(cfg.trainer.device).type)
    if replica.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        validate(cfg)
        apply_pass_budget(cfg)
        config = OmegaConf.to_container(cfg, resolve=True)
        if replica.is_main:
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
        return _train(cfg, run_dir, config, replica)
    except BaseException as error:
        if replica.is_main:
            write_json({"status": "failed", "error": f"{type(error).__name__}: {error}"}, run_dir / "summary.json")
        raise


def prepare_model(model: nn.Module, cfg: DictConfig, device: torch.device, replica: Replica) -> nn.Module:
    """What the trainer runs forward: the model on its device (channels-last if asked), wrapped in
    DDP across replicas and compiled with ``torch.compile`` when ``trainer.compile`` is set. The
    optimizer holds the unwrapped model's parameters, which every wrapper shares."""
    model = model.to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if replica.distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.trainer.compile:
        model = torch.compile(model, mode=cfg.trainer.compile_mode, backend=cfg.trainer.compile_backend)
    return model


def _train(cfg: DictConfig, run_dir: Path, config: dict[str, Any], replica: Replica) -> dict[str, Any]:
    checkpoint_path = resume_checkpoint(cfg.trainer.resume, run_dir)
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path else None
    checkpoint_dir = checkpoint_path.parent if checkpoint_path else None
    if replica.is_main and checkpoint_dir and checkpoint_dir.resolve() != run_dir.resolve() \
            and (checkpoint_dir / "best.pt").is_file():
        shutil.copy2(checkpoint_dir / "best.pt", run_dir / "best.pt")

    seed_everything(replica_seed(cfg.seed, replica.rank), cfg.trainer.deterministic)
    device = resolve_device(cfg.trainer.device)
    if replica.distributed and device.type == "cuda":
        device = torch.device("cuda", replica.local_rank)
        torch.cuda.set_device(device)
    precision = resolve_precision(cfg.trainer.precision, device)
    splits = build_dataset(cfg.dataset)
    if splits.label_noise is not None and replica.is_main:
        write_json(asdict(splits.label_noise), run_dir / "label_noise.json")
    loaders = make_loaders(splits, cfg.dataset, device, cfg.seed, replica.rank, replica.world_size)
    module = build_model(cfg.model)
    if cfg.trainer.sharpness:
        select_parameters(module, cfg.trainer.sharpness_params)  # an empty selection fails now, not after training
    optimizer = build_optimizer(cfg.optimizer, module.to(device), train_size=len(splits.train))
    model = prepare_model(module, cfg, device, replica)
    steps_per_epoch = optimizer_steps_per_epoch(len(loaders.train), cfg.trainer)
    scheduler = build_scheduler(cfg.scheduler, optimizer, steps_per_epoch, cfg.trainer.epochs)
    hyper_schedule = build_hyper_schedule(cfg.optimizer, optimizer, steps_per_epoch * cfg.trainer.epochs)
    log.info("run dir %s | device %s | precision %s | %s on %s with %s | replica %d of %d", run_dir, device,
             precision, type(module).__name__, cfg.dataset.name, cfg.optimizer.name, replica.rank + 1,
             replica.world_size)

    loggers = open_loggers(cfg, run_dir, config, checkpoint, checkpoint_dir) if replica.is_main else Loggers([])
    failed = True
    try:
        trainer = Trainer(cfg.trainer, model, optimizer, scheduler, hyper_schedule, loaders, device, precision,
                          run_dir, loggers, config, Task.from_config(cfg.dataset), replica)
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint, checkpoint_path)
            log.info("resumed from %s at epoch %d", checkpoint_path, trainer.epoch)
        summary = trainer.fit()
        if cfg.trainer.sharpness and replica.is_main:
            summary["sharpness"] = measure_final_model(cfg, module, splits, device)
        summary["choices"] = hydra_context()["choices"]
        if replica.is_main:
            write_json(summary, run_dir / "summary.json")
        loggers.summary(summary)
        failed = False
    finally:
        loggers.close(failed)
    return summary


def measure_final_model(cfg: DictConfig, model: nn.Module, splits: DataSplits, device: torch.device) -> dict[str, Any]:
    """``trainer.sharpness``: the trained model's Hessian trace and top eigenvalues on the training
    split, with the task's unsmoothed loss. A failure (say, out of memory in the double backward) is
    logged and recorded instead of raised, so the run keeps its summary; ``python -m
    flatmin.sharpness`` can measure the checkpoint later."""
    try:
        return measure_run(model, splits, cfg, device)
    except Exception as error:
        log.exception("the sharpness measurement failed; the run's other results are kept")
        return {"error": f"{type(error).__name__}: {error}"}


def main(cfg: DictConfig) -> float | None:
    """``train.py``'s body: run, report bad input in one sentence (exit 2), return the objective.

    In a sweep the error is raised instead of exiting, so Hydra marks this job failed and runs
    the others (each failed job's ``summary.json`` says ``"status": "failed"``).
    """
    try:
        summary = run(cfg)
    except FlatminError as error:
        print(f"flatmin: error: {error}", file=sys.stderr)
        if hydra_context()["multirun"]:
            raise
        raise SystemExit(2) from None
    best = summary.get("best_val") or {}
    return best.get(cfg.trainer.monitor)
