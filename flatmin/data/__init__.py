"""Datasets: one module per family, each returning :class:`DataSplits`; ``build_dataset`` picks one."""

from __future__ import annotations

from omegaconf import DictConfig

from flatmin.data.digits import build_digits
from flatmin.data.splits import DataSplits, EpochShuffleSampler, Loaders, build_loaders
from flatmin.errors import ConfigError

DATASETS = {
    "digits": lambda cfg: build_digits(cfg.split.val_fraction, cfg.split.test_fraction, cfg.split.seed),
}


def build_dataset(cfg: DictConfig) -> DataSplits:
    """Build the splits named by ``cfg.name`` (the ``dataset`` config group)."""
    if cfg.name not in DATASETS:
        raise ConfigError(f"dataset.name must be one of {', '.join(sorted(DATASETS))} (got {cfg.name!r}).")
    return DATASETS[cfg.name](cfg)


__all__ = ["DATASETS", "DataSplits", "EpochShuffleSampler", "Loaders", "build_dataset", "build_loaders"]
