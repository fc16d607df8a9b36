"""Datasets: one module per family, each returning :class:`DataSplits`; ``build_dataset`` picks one.

Every family is imported when first built (digits needs scikit-learn, the images torchvision, GLUE
transformers and ``datasets``), so that a run waits only for the imports of its own data, and a
command-line error for none.
"""

from __future__ import annotations

import importlib
from typing import Callable

from omegaconf import DictConfig

import torch

from flatmin.data.device_loader import build_device_loaders
from flatmin.data.loaders import Loaders, build_loaders, resolve_num_workers
from flatmin.data.sampler import EpochShuffleSampler
from flatmin.data.splits import DataSplits
from flatmin.errors import ConfigError, DataFormatError

FINETUNE_SETS = ("aircraft", "caltech256", "cars", "cub200", "dogs", "flowers102", "indoor67")
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def imported_on_use(module: str, builder: str) -> Callable[[DictConfig], DataSplits]:
    """``flatmin.data.<module>.<builder>``, imported on the first call."""
    return lambda cfg: getattr(importlib.import_module(f"flatmin.data.{module}"), builder)(cfg)


DATASETS: dict[str, Callable[[DictConfig], DataSplits]] = {
    "digits": imported_on_use("digits", "build_digits"),
    "cifar10": imported_on_use("cifar", "build_cifar"),
    "cifar100": imported_on_use("cifar", "build_cifar"),
    **{name: imported_on_use("finetune", "build_finetune") for name in FINETUNE_SETS},
    **{f"glue/{task}": imported_on_use("glue", "build_glue") for task in GLUE_TASKS},
}


def evaluation_prefixes(cfg: DictConfig) -> list[str]:
    """The prefixes of the metrics the dataset's validation splits produce (``val``; MNLI also
    ``val_mismatched``); none when it has no validation split (``dataset.split.val_fraction=0``)."""
    if "eval_splits" in cfg:
        return list(cfg.eval_splits)
    return [] if cfg.get("split", {}).get("val_fraction") == 0 else ["val"]


def build_dataset(cfg: DictConfig) -> DataSplits:
    """Build the splits named by ``cfg.name`` (the ``dataset`` config group)."""
    if cfg.name not in DATASETS:
        raise ConfigError(f"dataset.name must be one of {', '.join(sorted(DATASETS))} (got {cfg.name!r}).")
    splits = DATASETS[cfg.name](cfg)
    if splits.num_classes != cfg.num_classes:
        raise DataFormatError(f"{cfg.name} has {splits.num_classes} classes but dataset.num_classes is "
                              f"{cfg.num_classes}; leave dataset.num_classes as the dataset config sets it.")
    return splits


def make_loaders(splits: DataSplits, cfg: DictConfig, device: torch.device, seed: int, rank: int = 0,
                 world_size: int = 1) -> Loaders:
    """The loaders ``dataset.loader`` asks for: ``gpu`` keeps the splits on ``device``
    (:mod:`flatmin.data.device_loader`), ``torch`` uses DataLoaders, ``auto`` the first on CUDA
    when the dataset offers it and the second otherwise."""
    choice = cfg.get("loader", "torch")
    if choice == "gpu" and splits.on_device is None:
        raise ConfigError(f"dataset.loader=gpu is not available for {cfg.name} with this augmentation "
                          "(only CIFAR without augment.policy, and digits, run on the device); "
                          "use dataset.loader=torch or auto.")
    if choice == "gpu" or (choice == "auto" and device.type == "cuda" and splits.on_device is not None):
        return build_device_loaders(splits.on_device, cfg.batch_size, cfg.eval_batch_size, device, seed, rank,
                                    world_size)
    return build_loaders(splits, cfg.batch_size, cfg.eval_batch_size, resolve_num_workers(cfg.num_workers),
                         seed, pin_memory=device.type == "cuda", rank=rank, world_size=world_size)


__all__ = ["DATASETS", "FINETUNE_SETS", "GLUE_TASKS", "DataSplits", "EpochShuffleSampler", "Loaders", "build_dataset",
           "build_loaders", "evaluation_prefixes", "make_loaders", "resolve_num_workers"]
