"""CIFAR-10/100 through torchvision's reader on pickled batches written in the real format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from flatmin import rundir
from flatmin.data import build_dataset
from flatmin.data.transforms import Cutout
from flatmin.errors import DataFormatError
from flatmin.train import run
from tests.conftest import make_config, run_cli
from tests.data.writers import write_cifar10, write_cifar100

MEAN = torch.tensor([0.4914, 0.4822, 0.4465])[:, None, None]
STD = torch.tensor([0.2470, 0.2435, 0.2616])[:, None, None]


def cifar(tmp_path: Path, name: str, *overrides: str):
    cfg = make_config(tmp_path / "run", f"dataset={name}", f"paths.data_dir={tmp_path}", "dataset.download=false",
                      *overrides)
    return build_dataset(cfg.dataset)


def pixel_index(image: torch.Tensor) -> int:
    """The writer fills image i with the value i % 256: undo the normalisation to read it back."""
    return round(float((image * STD + MEAN)[0].mean()) * 255)


def test_cifar10_reads_the_batches_with_a_seeded_ten_percent_hold_out(tmp_path: Path):
    write_cifar10(tmp_path, per_batch=20, test=30)
    splits = cifar(tmp_path, "cifar10", "dataset.augment.crop_flip=false")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (90, 10, 30)
    assert splits.num_classes == 10
    train, val = splits.train.samples.indices, splits.val.samples.indices
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    for dataset in (splits.train, splits.val, splits.test):
        for position in range(len(dataset)):
            image, label = dataset[position]
            assert image.shape == (3, 32, 32) and image.dtype == torch.float32
            offset = 100 if dataset is splits.test else 0
            index = pixel_index(image) - offset
            assert label == index % 10, "each image keeps its own label"
    again = cifar(tmp_path, "cifar10")
    other_seed = cifar(tmp_path, "cifar10", "dataset.split.seed=1")
    assert np.array_equal(again.val.samples.indices, val)
    assert not np.array_equal(other_seed.val.samples.indices, val)


def test_cifar100_reads_fine_labels_and_can_skip_the_hold_out(tmp_path: Path):
    write_cifar100(tmp_path, train=200, test=100)
    splits = cifar(tmp_path, "cifar100", "dataset.split.val_fraction=0")
    assert splits.val is None and splits.num_classes == 100
    assert (len(splits.train), len(splits.test)) == (200, 100)
    assert np.bincount(splits.test.samples.labels, minlength=100).tolist() == [1] * 100
    assert splits.train[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("augment", [["dataset.augment.cutout=16"], ["dataset.augment.policy=autoaugment"],
                                     ["dataset.augment.policy=randaugment"]])
def test_augmentation_options_give_normalised_32px_tensors(tmp_path: Path, augment: list[str]):
    write_cifar10(tmp_path, per_batch=2, test=2)
    splits = cifar(tmp_path, "cifar10", *augment)
    image, _ = splits.train[0]
    assert image.shape == (3, 32, 32)
    evaluation, _ = splits.test[0]
    assert torch.allclose(evaluation, (torch.full((3, 32, 32), 100 / 255) - MEAN) / STD, atol=1e-6)


def test_cutout_zeroes_one_square_of_at_most_the_given_side():
    torch.manual_seed(0)
    for _ in range(20):
        image = Cutout(16)(torch.ones(3, 32, 32))
        rows, cols = torch.nonzero(image[0] == 0, as_tuple=True)
        assert 0 < len(rows) <= 256
        assert (image == 0).sum() == 3 * len(rows)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert height <= 16 and width <= 16 and height * width == len(rows)


def test_cutout_with_probability_cuts_that_share_of_the_images():
    torch.manual_seed(0)
    cut = sum(bool((Cutout(8, probability=0.5)(torch.ones(3, 32, 32)) == 0).any()) for _ in range(2000))
    assert binomtest(cut, 2000, 0.5).pvalue > 1e-3


def test_a_run_trains_on_the_cifar_files_and_tests_the_best_model(cfg_factory, tmp_path: Path):
    write_cifar10(tmp_path, per_batch=20, test=30)
    cfg = cfg_factory("dataset=cifar10", f"paths.data_dir={tmp_path}", "dataset.download=false", "model=resnet18",
                      "optimizer=sam", "trainer=debug", "dataset.batch_size=16", "dataset.num_workers=2")
    summary = run(cfg)
    assert summary["status"] == "completed" and summary["passes_per_step"] == 2.0
    assert set(summary["best_val"]) >= {"val/loss", "val/accuracy", "train/loss", "train/accuracy"}
    assert set(summary["test"]["best_val"]) == {"test/loss", "test/accuracy"}


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_batch_file_is_named_in_the_error(tmp_path: Path, damage: str):
    write_cifar10(tmp_path, per_batch=4, test=4)
    broken = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00not a pickle" * 10)
    cfg = make_config(tmp_path / "run", "dataset=cifar10", f"paths.data_dir={tmp_path}", "dataset.download=false")
    with pytest.raises(DataFormatError, match=rf"^{broken} cannot be read \(\w+\): it is truncated or corrupt"):
        build_dataset(cfg.dataset)


def damage(tmp_path: Path, how: str) -> Path:
    """CIFAR-10's batches with ``data_batch_2`` rewritten so that it unpickles but is not CIFAR's."""
    write_cifar10(tmp_path, per_batch=4, test=4)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(path, "rb") as file:
        entry = pickle.load(file, encoding="latin1")
    if how == "shape":
        entry["data"] = entry["data"][:, :100]
    elif how == "dtype":
        entry["data"] = entry["data"].astype(np.float32)
    elif how == "labels":
        entry["labels"] = [12] * len(entry["labels"])
    else:
        entry["labels"] = entry["labels"][:-1]
    with open(path, "wb") as file:
        pickle.dump(entry, file)
    return path


@pytest.mark.parametrize(("how", "problem"), [
    ("shape", "holds uint8 data of shape (4, 100) where CIFAR holds uint8 rows of 3,072 values (3 × 32 × 32)"),
    ("dtype", "holds float32 data of shape (4, 3072) where CIFAR holds uint8 rows of 3,072 values (3 × 32 × 32)"),
    ("labels", "holds labels outside 0..9 (such as 12)"),
    ("count", "holds 4 images and 3 labels"),
])
def test_a_batch_file_that_is_not_cifars_is_named_with_what_is_wrong(tmp_path: Path, how: str, problem: str):
    broken = damage(tmp_path, how)
    with pytest.raises(DataFormatError) as caught:
        cifar(tmp_path, "cifar10")
    assert str(caught.value) == f"{broken} {problem}; download or extract it again."


def test_the_command_line_names_a_malformed_batch_file_before_work(tmp_path: Path):
    broken = damage(tmp_path, "shape")
    result = run_cli("dataset=cifar10", f"paths.data_dir={tmp_path}", "dataset.download=false", "trainer.epochs=1",
                     f"hydra.run.dir={tmp_path / 'run'}", log_dir=tmp_path, check=False)
    assert result.returncode == rundir.EXIT_CODES["bad input"] and "Traceback" not in result.stderr
    assert f"flatmin: error: {broken} holds uint8 data of shape (4, 100)" in result.stderr
    assert not (tmp_path / "run" / rundir.CONFIG).exists()
