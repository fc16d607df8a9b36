"""What the image datasets share: samples as index lists into a reader, hold-out splits, and assembly.

A reader (torchvision's class, or :class:`ImageFiles` over a dataset's own file lists) yields
``(PIL image, label)``. A split is a :class:`Samples`: the reader, which of its samples, and their
labels; :func:`assemble` gives every split its transform and applies label noise to the training
labels only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from omegaconf import DictConfig
from torch.utils.data import Dataset
from torchvision.datasets.folder import default_loader

from flatmin.data.label_noise import apply_label_noise
from flatmin.data.splits import DataSplits
from flatmin.errors import DataFormatError


@dataclass(frozen=True)
class Samples:
    """Samples ``indices`` of ``reader`` with their ``labels`` (one per index)."""

    reader: Dataset
    indices: np.ndarray
    labels: np.ndarray

    @classmethod
    def all_of(cls, reader: Dataset, labels: Sequence[int]) -> "Samples":
        return cls(reader, np.arange(len(labels)), np.asarray(labels, dtype=np.int64))

    def subset(self, positions: np.ndarray) -> "Samples":
        return Samples(self.reader, self.indices[positions], self.labels[positions])


@dataclass(frozen=True)
class ImageSet:
    """An image dataset as its own files define it: class names and the official splits."""

    classes: list[str]
    train: Samples
    val: Samples | None
    test: Samples


class ImageFiles(Dataset):
    """Images listed by path (a dataset's own file lists), loaded as RGB with torchvision's loader."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int]) -> None:
        self.paths = list(paths)
        self.labels = list(labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return default_loader(str(self.paths[index])), self.labels[index]


def listed_images(paths: Sequence[Path], labels: Sequence[int]) -> Samples:
    """All the images of a file list, with their labels."""
    return Samples.all_of(ImageFiles(paths, labels), labels)


class ImageSubset(Dataset):
    """The samples of one split, each as ``(transform(image), label)`` with the split's own labels."""

    def __init__(self, samples: Samples, transform: Callable[[Any], Any]) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, _ = self.samples.reader[int(self.samples.indices[index])]
        return self.transform(image), int(self.samples.labels[index])


def hold_out(samples: Samples, fraction: float, seed: int) -> tuple[Samples, Samples | None]:
    """Split off ``round(fraction * n)`` samples, uniformly at random with ``seed``, as validation.

    Returns ``(train, val)``; ``val`` is None when ``fraction`` is 0.
    """
    count = round(fraction * len(samples.indices))
    if count == 0:
        return samples, None
    order = np.random.default_rng(seed).permutation(len(samples.indices))
    return samples.subset(np.sort(order[count:])), samples.subset(np.sort(order[:count]))


def assemble(images: ImageSet, cfg: DictConfig, train_transform: Callable[[Any], Any],
             eval_transform: Callable[[Any], Any]) -> DataSplits:
    """The :class:`DataSplits` of ``images`` as the dataset config ``cfg`` asks.

    ``cfg.split.val_fraction`` (where the config has it) holds out validation samples from the
    training split; ``cfg.label_noise`` flips training labels. The class count read from the
    dataset's files must match ``cfg.num_classes``.
    """
    if len(images.classes) != cfg.num_classes:
        raise DataFormatError(f"{cfg.name} has {len(images.classes)} classes on disk but dataset.num_classes is "
                              f"{cfg.num_classes}; check the files under {cfg.data_dir}.")
    train, val = images.train, images.val
    val_fraction = cfg.get("split", {}).get("val_fraction")
    if val_fraction is not None:
        train, val = hold_out(train, val_fraction, cfg.split.seed)
    noisy_labels, record = apply_label_noise(train.labels, cfg.num_classes, cfg.get("label_noise"), cfg.name)
    train = replace(train, labels=noisy_labels)
    return DataSplits(train=ImageSubset(train, train_transform),
                      val=ImageSubset(val, eval_transform) if val is not None else None,
                      test=ImageSubset(images.test, eval_transform),
                      num_classes=cfg.num_classes, label_noise=record)
