"""Datasets: one module per family, each returning :class:`DataSplits`; ``build_dataset`` picks one.

The families that need torchvision, transformers or ``datasets`` are imported when first built, so
that a run on digits (and every command-line error) does not wait seconds for those imports.
"""

from __future__ import annotations

import importlib
from typing import Callable

from omegaconf import DictConfig

from flatmin.data.digits import build_digits
from flatmin.data.splits import DataSplits, EpochShuffleSampler, Loaders, build_loaders
from flatmin.errors import ConfigError

FINETUNE_SETS = ("aircraft", "caltech256", "cars", "cub200", "dogs", "flowers102", "indoor67")
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def imported_on_use(module: str, builder: str) -> Callable[[DictConfig], DataSplits]:
    """``flatmin.data.<module>.<builder>``, imported on the first call."""
    return lambda cfg: getattr(importlib.import_module(f"flatmin.data.{module}"), builder)(cfg)


DATASETS: dict[str, Callable[[DictConfig], DataSplits]] = {
    "digits": lambda cfg: build_digits(cfg.split.val_fraction, cfg.split.test_fraction, cfg.split.seed,
                                       cfg.get("label_noise")),
    "cifar10": imported_on_use("cifar", "build_cifar"),
    "cifar100": imported_on_use("cifar", "build_cifar"),
    **{name: imported_on_use("finetune", "build_finetune") for name in FINETUNE_SETS},
    **{f"glue/{task}": imported_on_use("glue", "build_glue") for task in GLUE_TASKS},
}


def build_dataset(cfg: DictConfig) -> DataSplits:
    """Build the splits named by ``cfg.name`` (the ``dataset`` config group)."""
    if cfg.name not in DATASETS:
        raise ConfigError(f"dataset.name must be one of {', '.join(sorted(DATASETS))} (got {cfg.name!r}).")
    return DATASETS[cfg.name](cfg)


__all__ = ["DATASETS", "FINETUNE_SETS", "GLUE_TASKS", "DataSplits", "EpochShuffleSampler", "Loaders", "build_dataset", "build_loaders"]
