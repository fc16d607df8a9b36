"""The run entry behind ``train.py``: config → data → model → optimizer → Trainer → run directory.

``run(cfg)`` does one job and returns its summary (tests call it directly); ``main(cfg)`` is what
``train.py`` calls under Hydra: it turns a :class:`~flatmin.errors.FlatminError` into one sentence on
stderr and exit status 2, and returns the monitored validation metric for Hydra sweepers.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from flatmin.config import validate
from flatmin.data import build_dataset, build_loaders
from flatmin.errors import FlatminError
from flatmin.models import build_model
from flatmin.optim import build_hyper_schedule, build_optimizer
from flatmin.train.checkpoint import load_checkpoint, write_json
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


def hydra_context() -> dict[str, Any]:
    """The job's name, its sweep (the W&B group) and the chosen config options, when under Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {"name": None, "group": None, "choices": {}}
    hydra = HydraConfig.get()
    multirun = hydra.mode == RunMode.MULTIRUN
    return {
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
    """Train one job as configured and return its summary (also written to ``summary.json``)."""
    validate(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    try:
        return _train(cfg, run_dir, config)
    except BaseException as error:
        write_json({"status": "failed", "error": f"{type(error).__name__}: {error}"}, run_dir / "summary.json")
        raise


def _train(cfg: DictConfig, run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    checkpoint_path = resume_checkpoint(cfg.trainer.resume, run_dir)
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path else None
    checkpoint_dir = checkpoint_path.parent if checkpoint_path else None
    if checkpoint_dir and checkpoint_dir.resolve() != run_dir.resolve() and (checkpoint_dir / "best.pt").is_file():
        shutil.copy2(checkpoint_dir / "best.pt", run_dir / "best.pt")

    seed_everything(cfg.seed, cfg.trainer.deterministic)
    device = resolve_device(cfg.trainer.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    splits = build_dataset(cfg.dataset)
    loaders = build_loaders(splits, cfg.dataset.batch_size, cfg.dataset.eval_batch_size, cfg.dataset.num_workers,
                            cfg.seed, pin_memory=device.type == "cuda")
    model = build_model(cfg.model).to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model)
    steps_per_epoch = optimizer_steps_per_epoch(len(loaders.train), cfg.trainer)
    scheduler = build_scheduler(cfg.scheduler, optimizer, steps_per_epoch, cfg.trainer.epochs)
    hyper_schedule = build_hyper_schedule(cfg.optimizer, optimizer, steps_per_epoch * cfg.trainer.epochs)
    log.info("run dir %s | device %s | precision %s | %s on %s with %s", run_dir, device, precision,
             type(model).__name__, cfg.dataset.name, cfg.optimizer.name)

    loggers = open_loggers(cfg, run_dir, config, checkpoint, checkpoint_dir)
    failed = True
    try:
        trainer = Trainer(cfg.trainer, model, optimizer, scheduler, hyper_schedule, loaders, device, precision,
                          run_dir, loggers, config)
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint, checkpoint_path)
            log.info("resumed from %s at epoch %d", checkpoint_path, trainer.epoch)
        summary = trainer.fit()
        summary["choices"] = hydra_context()["choices"]
        write_json(summary, run_dir / "summary.json")
        loggers.summary(summary)
        failed = False
    finally:
        loggers.close(failed)
    return summary


def main(cfg: DictConfig) -> float | None:
    """``train.py``'s body: run, report bad input in one sentence (exit 2), return the objective."""
    try:
        summary = run(cfg)
    except FlatminError as error:
        print(f"flatmin: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    best = summary.get("best_val") or {}
    return best.get(cfg.trainer.monitor)
