"""scikit-learn's handwritten digits: 1,797 real 8x8 grey images of 10 classes, shipped offline.

The default dataset: it needs no download, so ``python train.py`` runs on any machine. The split
is fixed and stratified (by default 60/20/20 with split seed 0, independent of the run's seed),
pixels are scaled to [0, 1] and standardised with the training split's mean and std.
``label_noise`` (the ``dataset.label_noise`` config) flips training labels only.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from omegaconf import DictConfig
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from flatmin.data.label_noise import apply_label_noise
from flatmin.data.splits import DataSplits, DeviceData
from flatmin.errors import ConfigError


def build_digits(cfg: DictConfig) -> DataSplits:
    """Load the digits and split them stratified into train/val/test as ``cfg.split`` says, as
    (N, 1, 8, 8) floats (no validation split when ``val_fraction`` is 0)."""
    val_fraction, test_fraction, split_seed = cfg.split.val_fraction, cfg.split.test_fraction, cfg.split.seed
    label_noise = cfg.get("label_noise")
    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)
    indices = np.arange(len(labels))
    try:
        train_val, test = train_test_split(indices, test_size=test_fraction, stratify=labels,
                                           random_state=split_seed)
        train, val = (train_val, None) if val_fraction == 0 else train_test_split(
            train_val, test_size=val_fraction / (1.0 - test_fraction), stratify=labels[train_val],
            random_state=split_seed)
    except ValueError as error:            # too few examples of a class in a split
        raise ConfigError(f"dataset.split.val_fraction ({val_fraction}) and test_fraction ({test_fraction}) do not "
                          f"leave every class in every split of the {len(labels)} digits ({error}).") from None
    mean, std = images[train].mean(), images[train].std()

    def subset(index: np.ndarray | None, targets: np.ndarray | None) -> TensorDataset | None:
        if index is None:
            return None
        x = torch.from_numpy((images[index] - mean) / std).unsqueeze(1)
        return TensorDataset(x, torch.from_numpy(targets))

    train_labels, record = apply_label_noise(labels[train], 10, label_noise, "digits")
    splits = [subset(train, train_labels), subset(val, None if val is None else labels[val]),
              subset(test, labels[test])]
    return DataSplits(*splits, num_classes=10, label_noise=record,
                      on_device=DeviceData(*(split.tensors if split is not None else None for split in splits)))
