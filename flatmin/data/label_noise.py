"""Label noise on the training split, for low signal-to-noise studies (G-TRACER, Williams & Roberts 2023).

``dataset.label_noise: {rate, mode, seed}``. Exactly ``round(rate * n)`` of the ``n`` eligible
training labels are flipped, chosen uniformly with ``seed``:

* ``symmetric``: every label is eligible and flips to a uniformly random *other* class;
* ``asymmetric``: class-pair noise (Patrini et al., CVPR 2017): a label of class ``c`` flips to
  ``pairs[c]``. CIFAR-10 uses the standard pairs truck→automobile, bird→airplane, deer→horse,
  cat↔dog (labels of the other five classes are not eligible); every other dataset uses the
  cyclic map ``c → (c + 1) mod C``.

Validation and test labels are never touched. The flipped positions (in flatmin's training split)
with their original and noisy labels are returned so the run can save them (``label_noise.json``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig

from flatmin.errors import ConfigError

#: CIFAR-10 classes: airplane 0, automobile 1, bird 2, cat 3, deer 4, dog 5, frog 6, horse 7, ship 8, truck 9.
CIFAR10_PAIRS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
ASYMMETRIC_PAIRS: dict[str, dict[int, int]] = {"cifar10": CIFAR10_PAIRS}


@dataclass
class NoisyLabels:
    """What label noise did to a training split (written to the run directory as ``label_noise.json``)."""

    rate: float
    mode: str
    seed: int
    indices: list[int]
    original: list[int]
    noisy: list[int]


def flip_labels(labels: np.ndarray, num_classes: int, rate: float, mode: str, seed: int,
                pairs: dict[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly ``round(rate * eligible)`` labels; return the new labels and the flipped positions.

    ``pairs`` (asymmetric mode only) maps a source class to its target class; ``None`` is the
    cyclic map ``c → c + 1``.
    """
    if mode not in ("symmetric", "asymmetric"):
        raise ConfigError(f"dataset.label_noise.mode must be symmetric or asymmetric (got {mode!r}).")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if mode == "asymmetric":
        pairs = pairs if pairs is not None else {c: (c + 1) % num_classes for c in range(num_classes)}
        eligible = np.flatnonzero(np.isin(labels, list(pairs)))
    else:
        eligible = np.arange(len(labels))
    flipped = np.sort(rng.choice(eligible, size=round(rate * len(eligible)), replace=False))
    noisy = labels.copy()
    if mode == "asymmetric":
        noisy[flipped] = [pairs[c] for c in labels[flipped]]
    else:
        noisy[flipped] = (labels[flipped] + rng.integers(1, num_classes, size=len(flipped))) % num_classes
    return noisy, flipped


def apply_label_noise(labels: np.ndarray, num_classes: int, noise: DictConfig | None,
                      dataset: str) -> tuple[np.ndarray, NoisyLabels | None]:
    """The training labels after ``dataset.label_noise`` (unchanged, and no record, at rate 0)."""
    if noise is None or noise.rate == 0:
        return np.asarray(labels), None
    noisy, flipped = flip_labels(labels, num_classes, noise.rate, noise.mode, noise.seed,
                                 ASYMMETRIC_PAIRS.get(dataset))
    record = NoisyLabels(rate=noise.rate, mode=noise.mode, seed=noise.seed, indices=flipped.tolist(),
                         original=np.asarray(labels)[flipped].tolist(), noisy=noisy[flipped].tolist())
    return noisy, record
