"""What every dataset builder returns: :class:`DataSplits`; the small-image datasets also offer their
splits as tensors (:class:`DeviceData`, with its :class:`Augmentation`) for the device-resident loader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch import Tensor
from torch.utils.data import Dataset

from flatmin.data.label_noise import NoisyLabels


@dataclass(frozen=True)
class Augmentation:
    """Per-batch training augmentation: crop padding (0 = none), flip, cutout side (0 = none) and
    the probability that an image is cut out (davda54/sam's 0.5; 1 by default)."""

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0
    cutout_probability: float = 1.0


@dataclass(frozen=True)
class DeviceData:
    """A dataset's splits as ``(images, labels)`` tensors, for :class:`DeviceLoader`.

    Offered by the small-image datasets whose whole training recipe runs on the device (CIFAR
    without an AutoAugment/RandAugment policy, digits); ``mean``/``std`` None means the images are
    already normalised floats.
    """

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor] | None
    test: tuple[Tensor, Tensor] | None
    augmentation: Augmentation = Augmentation()
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None


@dataclass
class DataSplits:
    """The splits of one dataset.

    ``val`` is None when the protocol has none; ``test`` is None when its labels are hidden (GLUE).
    ``extra_val`` holds further evaluation splits by metric prefix (MNLI's ``val_mismatched``),
    ``collate`` batches samples that the default collation cannot (tokenised text),
    ``label_noise`` records the training labels that label noise flipped, and ``on_device`` offers
    the splits as tensors for the device-resident loader (small-image datasets).
    """

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    num_classes: int
    extra_val: dict[str, Dataset] = field(default_factory=dict)
    collate: Callable[[list[Any]], Any] | None = None
    label_noise: NoisyLabels | None = None
    on_device: DeviceData | None = None
