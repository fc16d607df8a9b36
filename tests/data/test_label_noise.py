"""Label noise flips exactly round(rate * n) training labels, seeded, and never touches val or test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flatmin.data import build_dataset
from flatmin.data.label_noise import CIFAR10_PAIRS, flip_labels
from flatmin.train import run
from tests.conftest import make_config
from tests.data.writers import write_cifar10


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6])
@pytest.mark.parametrize("n", [1000, 37])
def test_symmetric_noise_flips_r_of_the_labels_to_other_classes(rate: float, n: int):
    labels = np.arange(n) % 10
    noisy, flipped = flip_labels(labels, 10, rate, "symmetric", seed=0)
    changed = np.flatnonzero(noisy != labels)
    assert abs(len(changed) - rate * n) <= 0.5 + 1e-9
    assert np.array_equal(changed, flipped)
    assert noisy.min() >= 0 and noisy.max() < 10
    again, _ = flip_labels(labels, 10, rate, "symmetric", seed=0)
    other, _ = flip_labels(labels, 10, rate, "symmetric", seed=1)
    assert np.array_equal(again, noisy) and not np.array_equal(other, noisy)


def test_symmetric_targets_are_spread_over_the_other_classes():
    labels = np.zeros(9000, dtype=np.int64)
    noisy, _ = flip_labels(labels, 10, 0.9, "symmetric", seed=0)
    counts = np.bincount(noisy, minlength=10)
    assert counts[0] == 900
    assert np.all(np.abs(counts[1:] - 900) < 120)


def test_asymmetric_cifar10_noise_flips_only_within_the_standard_pairs():
    labels = np.arange(1000) % 10
    noisy, flipped = flip_labels(labels, 10, 0.4, "asymmetric", seed=0, pairs=CIFAR10_PAIRS)
    eligible = np.isin(labels, list(CIFAR10_PAIRS))
    assert len(flipped) == round(0.4 * eligible.sum())
    assert np.all(eligible[flipped])
    assert all(noisy[i] == CIFAR10_PAIRS[labels[i]] for i in flipped)
    assert np.array_equal(noisy[~eligible], labels[~eligible])


def test_asymmetric_noise_elsewhere_is_the_cyclic_map():
    labels = np.arange(500) % 5
    noisy, flipped = flip_labels(labels, 5, 0.3, "asymmetric", seed=0)
    assert len(flipped) == 150
    assert np.array_equal(noisy[flipped], (labels[flipped] + 1) % 5)


def labels_of(dataset) -> np.ndarray:
    return np.array([int(dataset[i][1]) for i in range(len(dataset))])


def test_cifar10_noise_changes_the_training_split_only(tmp_path: Path):
    write_cifar10(tmp_path, per_batch=40, test=30)

    def splits(*overrides: str):
        cfg = make_config(tmp_path / "run", "dataset=cifar10", f"paths.data_dir={tmp_path}", "dataset.download=false",
                          *overrides)
        return build_dataset(cfg.dataset)

    clean = splits()
    noisy = splits("dataset.label_noise.rate=0.4", "dataset.label_noise.mode=asymmetric")
    assert clean.label_noise is None
    changed = np.flatnonzero(noisy.train.samples.labels != clean.train.samples.labels)
    assert changed.tolist() == noisy.label_noise.indices
    assert len(changed) == round(0.4 * np.isin(clean.train.samples.labels, list(CIFAR10_PAIRS)).sum())
    assert np.array_equal(labels_of(noisy.test), labels_of(clean.test))
    assert np.array_equal(labels_of(noisy.val), labels_of(clean.val))


def test_a_noisy_run_saves_the_flipped_labels_and_tests_on_clean_labels(cfg_factory):
    cfg = cfg_factory("dataset.label_noise.rate=0.2", "trainer=debug")
    clean = build_dataset(cfg_factory().dataset)
    run(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "label_noise.json").read_text())
    train_labels = clean.train.tensors[1]
    assert (record["rate"], record["mode"], record["seed"]) == (0.2, "symmetric", 0)
    assert len(record["indices"]) == round(0.2 * len(train_labels))
    assert record["original"] == train_labels[record["indices"]].tolist()
    assert all(a != b for a, b in zip(record["original"], record["noisy"]))
    noisy = build_dataset(cfg.dataset)
    assert torch.equal(noisy.test.tensors[1], clean.test.tensors[1])
    assert torch.equal(noisy.val.tensors[1], clean.val.tensors[1])
    assert not (Path(cfg_factory().paths.output_dir) / "label_noise.json").exists()
