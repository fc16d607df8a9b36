"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) in torchvision's format, with torchvision's downloader.

Files: ``<data_dir>/cifar-10-batches-py/`` (``data_batch_1`` … ``data_batch_5``, ``test_batch``,
``batches.meta``) and ``<data_dir>/cifar-100-python/`` (``train``, ``test``, ``meta``): the
extracted ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``.

torchvision's readers check the md5 sum of every batch file before reading. flatmin's subclasses
check that the files exist instead, so the same reader also opens files written in the same
pickled format by other tools (and by the tests); the downloaded archive's md5 is still checked.
With ``dataset.download=true`` a missing dataset is fetched by torchvision's downloader; without
network that fails and the run stops with one sentence saying where to put the files.

Splits: the official 50,000/10,000 train/test, with ``split.val_fraction`` (default 10%) of the
training images held out for validation, chosen with ``split.seed``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from torchvision.datasets import CIFAR10, CIFAR100

from flatmin.data.files import DatasetFiles, ensure_present
from flatmin.data.images import ImageSet, ImageSubset, Samples, assemble
from flatmin.data.splits import Augmentation, DataSplits, DeviceData
from flatmin.errors import DataFormatError
from flatmin.data.transforms import cifar_transforms


class CIFAR10Files(CIFAR10):
    """torchvision's CIFAR-10 reader with an existence check in place of the per-file md5 check."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class CIFAR100Files(CIFAR100):
    """torchvision's CIFAR-100 reader with an existence check in place of the per-file md5 check."""

    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


READERS: dict[str, type[CIFAR10]] = {"cifar10": CIFAR10Files, "cifar100": CIFAR100Files}
TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def cifar_files(name: str) -> DatasetFiles:
    """The batch files of ``cifar10`` or ``cifar100`` under ``paths.data_dir``."""
    reader = READERS[name]
    names = [file for file, _ in reader.train_list + reader.test_list] + [reader.meta["filename"]]
    return DatasetFiles(title=TITLES[name], folder=reader.base_folder, required=tuple(names),
                        what=", ".join(names),
                        source=f"extract {reader.filename} from https://www.cs.toronto.edu/~kriz/cifar.html, "
                               "or run once with network and dataset.download=true")


#: Where each CIFAR's batches keep their labels, and how many classes there are.
LABELS = {"cifar10": ("labels", 10), "cifar100": ("fine_labels", 100)}
#: One image of a batch's ``data``: the R, G and B planes of 32x32 pixels.
ROW = 3 * 32 * 32


def batch_problem(path: Path, name: str) -> str | None:
    """What the batch file ``path`` of CIFAR ``name`` does not hold that it must (a dict whose
    ``data`` is uint8 rows of 3,072 values, one label per row, each a class of the dataset), or
    None when it holds it all."""
    label_key, classes = LABELS[name]
    try:
        with open(path, "rb") as file:
            entry = pickle.load(file, encoding="latin1")
    except Exception as error:
        return f"cannot be read ({type(error).__name__}): it is truncated or corrupt"
    data = entry.get("data") if isinstance(entry, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == ROW):
        held = f"{data.dtype} data of shape {data.shape}" if isinstance(data, np.ndarray) else "no data array"
        return f"holds {held} where CIFAR holds uint8 rows of {ROW:,} values (3 × 32 × 32)"
    labels = entry.get(label_key)
    if not isinstance(labels, list) or len(labels) != len(data):
        return f"holds {len(data)} images and {len(labels) if isinstance(labels, list) else 'no'} {label_key}"
    outside = [label for label in labels if not isinstance(label, (int, np.integer)) or not 0 <= label < classes]
    if outside:
        return f"holds {label_key} outside 0..{classes - 1} (such as {outside[0]!r})"
    return None


def read_batches(reader: type[CIFAR10], name: str, data_dir: str) -> tuple[CIFAR10, CIFAR10]:
    """The train and test splits; a batch file that does not hold what CIFAR's must (it does not
    unpickle, or its images, labels or classes are not CIFAR's) is a :class:`DataFormatError`
    naming the file and what is wrong (torchvision's own errors name neither)."""
    try:
        splits = reader(data_dir, train=True), reader(data_dir, train=False)
        failure: Exception | None = None
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, AttributeError, TypeError) as error:
        splits, failure = None, error
    if splits is not None and all(split.data.dtype == np.uint8 and split.data.shape[1:] == (32, 32, 3)
                                  and len(split.targets) == len(split.data)
                                  and 0 <= min(split.targets) and max(split.targets) < LABELS[name][1]
                                  for split in splits):
        return splits
    folder = Path(data_dir) / reader.base_folder
    for file_name, _ in reader.train_list + reader.test_list:
        if (problem := batch_problem(folder / file_name, name)) is not None:
            raise DataFormatError(f"{folder / file_name} {problem}; download or extract it again.") from failure
    raise DataFormatError(f"{folder} does not hold CIFAR's batches; download or extract them again.") from failure


def build_cifar(cfg: DictConfig) -> DataSplits:
    """CIFAR-10/100 splits with the SAM-paper augmentation (``dataset.augment``) and label noise."""
    reader = READERS[cfg.name]
    ensure_present(cifar_files(cfg.name), cfg.data_dir,
                   (lambda: reader(cfg.data_dir, train=True, download=True)) if cfg.download else None)
    train, test = read_batches(reader, cfg.name, cfg.data_dir)
    images = ImageSet(classes=train.classes, train=Samples.all_of(train, train.targets), val=None,
                      test=Samples.all_of(test, test.targets))
    splits = assemble(images, cfg, *cifar_transforms(cfg))
    if cfg.augment.policy is None:     # AutoAugment/RandAugment exist only as CPU (PIL) transforms
        splits.on_device = DeviceData(
            *(as_tensors(split) if split is not None else None for split in (splits.train, splits.val, splits.test)),
            augmentation=Augmentation(crop_padding=4 if cfg.augment.crop_flip else 0, flip=cfg.augment.crop_flip,
                                      cutout=cfg.augment.cutout,
                                      cutout_probability=cfg.augment.cutout_probability),
            mean=tuple(cfg.normalize.mean), std=tuple(cfg.normalize.std))
    return splits


def write_cifar10(data_dir: Path, train_images: np.ndarray, train_labels: Sequence[int], test_images: np.ndarray,
                  test_labels: Sequence[int]) -> None:
    """Write ``(N, 3072)`` uint8 rows (R, G, B planes of 32x32) and labels as CIFAR-10's pickled
    batches under ``data_dir/cifar-10-batches-py/``: five training batches, ``test_batch`` and
    ``batches.meta``, the files :class:`CIFAR10Files` reads (used by tests and the benchmark)."""
    folder = Path(data_dir) / CIFAR10.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    batches = [(f"data_batch_{i + 1}", rows) for i, rows in enumerate(np.array_split(np.arange(len(train_labels)), 5))]
    for name, rows in batches:
        _pickle(folder / name, {"batch_label": name, "data": train_images[rows],
                                "labels": [int(train_labels[r]) for r in rows],
                                "filenames": [f"image_{r}.png" for r in rows]})
    _pickle(folder / "test_batch", {"batch_label": "test", "data": test_images,
                                    "labels": [int(label) for label in test_labels],
                                    "filenames": [f"test_{i}.png" for i in range(len(test_labels))]})
    _pickle(folder / "batches.meta", {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                      "horse", "ship", "truck"],
                                      "num_cases_per_batch": len(batches[0][1]), "num_vis": 3072})


def _pickle(path: Path, data: dict[str, Any]) -> None:
    with open(path, "wb") as file:
        pickle.dump(data, file, protocol=2)


def as_tensors(split: ImageSubset) -> tuple[Tensor, Tensor]:
    """A split's raw images as one uint8 ``(N, 3, 32, 32)`` tensor, with its (possibly noisy) labels."""
    images = split.samples.reader.data[split.samples.indices]
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(split.samples.labels)
