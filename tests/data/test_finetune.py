"""The fine-tuning sets on small trees in their official layouts: split sizes as in the nso_finetune
table of docs/recipes.md, class counts as in flatmin/conf/dataset/, labels read from the datasets' own files."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from flatmin.data import FINETUNE_SETS, build_dataset
from flatmin.data.finetune import FILES, READERS
from flatmin.errors import DataFormatError
from tests.conftest import make_config
from tests.data import writers


def build(data_dir: Path, name: str, *overrides: str):
    cfg = make_config(data_dir / "run", f"dataset={name}", f"paths.data_dir={data_dir}", *overrides)
    return build_dataset(cfg.dataset)


def held_out(train_total: int) -> tuple[int, int]:
    """(train, val) sizes after holding out 10% of the official training split."""
    val = round(0.1 * train_total)
    return train_total - val, val


def test_every_set_has_a_reader_and_its_files():
    assert set(FINETUNE_SETS) == set(READERS) == set(FILES)


# name → (writer, classes); the writers put 2 training and 1 test image in every class
HOLD_OUT_SETS: dict[str, tuple[Callable[[Path], None], int]] = {
    "cub200": (writers.write_cub200, 200),
    "cars": (writers.write_cars, 196),
    "dogs": (writers.write_dogs, 120),
    "indoor67": (writers.write_indoor67, 67),
}


@pytest.mark.parametrize("name", sorted(HOLD_OUT_SETS))
def test_official_train_test_with_ten_percent_held_out(tmp_path: Path, name: str):
    writer, classes = HOLD_OUT_SETS[name]
    writer(tmp_path)
    splits = build(tmp_path, name)
    assert splits.num_classes == classes
    assert (len(splits.train), len(splits.val)) == held_out(2 * classes)
    assert len(splits.test) == classes
    train_and_val = np.concatenate([splits.train.samples.labels, splits.val.samples.labels])
    assert np.bincount(train_and_val, minlength=classes).tolist() == [2] * classes
    assert np.bincount(splits.test.samples.labels, minlength=classes).tolist() == [1] * classes
    assert not set(splits.train.samples.indices) & set(splits.val.samples.indices)
    image, label = splits.train[0]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32 and 0 <= label < classes


@pytest.mark.parametrize(("name", "writer", "classes", "per_class"),
                         [("aircraft", writers.write_aircraft, 100, (1, 1, 1)),
                          ("flowers102", writers.write_flowers102, 102, (1, 1, 2))])
def test_official_train_val_test(tmp_path: Path, name: str, writer, classes: int, per_class: tuple[int, int, int]):
    writer(tmp_path)
    splits = build(tmp_path, name)
    assert splits.num_classes == classes
    for split, count in zip((splits.train, splits.val, splits.test), per_class):
        assert np.bincount(split.samples.labels, minlength=classes).tolist() == [count] * classes
    assert splits.test[0][0].shape == (3, 224, 224)


def test_caltech256_draws_30_20_20_per_class_without_clutter(tmp_path: Path):
    writers.write_caltech256(tmp_path)                # 70 to 72 images per class, plus 257.clutter
    splits = build(tmp_path, "caltech256")
    assert splits.num_classes == 256
    for split, count in ((splits.train, 30), (splits.val, 20), (splits.test, 20)):
        assert np.bincount(split.samples.labels, minlength=256).tolist() == [count] * 256
    chosen = [set(split.samples.indices) for split in (splits.train, splits.val, splits.test)]
    assert not (chosen[0] & chosen[1] or chosen[0] & chosen[2] or chosen[1] & chosen[2])
    reseeded = build(tmp_path, "caltech256", "dataset.split.seed=1")
    assert set(reseeded.train.samples.indices) != chosen[0]
    assert splits.train[0][0].shape == (3, 224, 224)


def test_without_augmentation_training_images_get_the_evaluation_transform(tmp_path: Path):
    writers.write_indoor67(tmp_path)
    plain = build(tmp_path, "indoor67", "dataset.augment.crop_flip=false")
    assert plain.train.transform is plain.test.transform
    augmented = build(tmp_path, "indoor67")
    names = [type(step).__name__ for step in augmented.train.transform.transforms]
    assert "RandomResizedCrop" in names and "RandomHorizontalFlip" in names
    assert "RandomResizedCrop" not in [type(step).__name__ for step in augmented.test.transform.transforms]


def test_a_class_count_that_disagrees_with_the_files_is_one_sentence(tmp_path: Path):
    writers.write_cub200(tmp_path)
    with pytest.raises(DataFormatError, match=r"^cub200 has 200 classes on disk but dataset.num_classes is 100;"):
        build(tmp_path, "cub200", "dataset.num_classes=100")
