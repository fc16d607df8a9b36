"""A dataset missing from disk stops the run with one sentence: where flatmin looked, what to put there,
and how to point paths.data_dir elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flatmin.data import DATASETS, build_dataset
from flatmin.data.cifar import CIFAR10Files
from flatmin.errors import DataNotFoundError
from tests.conftest import make_config, run_cli

#: dataset → (title in the sentence, its folder under paths.data_dir, a file the sentence must name)
EXPECTED = {
    "cifar10": ("CIFAR-10", "cifar-10-batches-py", "data_batch_1"),
    "cifar100": ("CIFAR-100", "cifar-100-python", "meta"),
    "aircraft": ("FGVC-Aircraft", "fgvc-aircraft-2013b", "images_variant_{train,val,test}.txt"),
    "cub200": ("CUB-200-2011", "CUB_200_2011", "train_test_split.txt"),
    "caltech256": ("Caltech-256", "caltech256", "256_ObjectCategories/"),
    "cars": ("Stanford Cars", "stanford_cars", "cars_meta.mat"),
    "dogs": ("Stanford Dogs", "stanford_dogs", "train_list.mat"),
    "flowers102": ("Flowers-102", "flowers-102", "setid.mat"),
    "indoor67": ("MIT Indoor-67", "indoor67", "TrainImages.txt"),
    **{name: (f"GLUE {name[5:]}", name, "train-*.parquet") for name in DATASETS if name.startswith("glue/")},
}


def assert_one_sentence(message: str, data_dir: Path, title: str, folder: str, file: str) -> None:
    assert message.startswith(f"{title} not found in {data_dir / folder}")
    assert file in message
    assert message.endswith(f"or set paths.data_dir (or FLATMIN_DATA_DIR) to the folder that holds {folder}.")
    assert "\n" not in message and not re.search(r"\.\s+[A-Z]", message), "one sentence"


def test_every_dataset_on_disk_is_covered():
    assert set(EXPECTED) == set(DATASETS) - {"digits"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_missing_dataset_is_one_sentence(tmp_path: Path, name: str, minilm_dir: Path):
    overrides = ["model=bert", f"model.name_or_path={minilm_dir}"] if name.startswith("glue/") else []
    cfg = make_config(tmp_path / "run", f"dataset={name}", f"paths.data_dir={tmp_path}", *overrides)
    if "download" in cfg.dataset:
        cfg.dataset.download = False
    with pytest.raises(DataNotFoundError) as caught:
        build_dataset(cfg.dataset)
    assert_one_sentence(str(caught.value), tmp_path, *EXPECTED[name])


def test_a_failed_download_says_so_in_the_same_sentence(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(CIFAR10Files, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")   # nothing listens there
    cfg = make_config(tmp_path / "run", "dataset=cifar10", f"paths.data_dir={tmp_path}", "dataset.download=true")
    with pytest.raises(DataNotFoundError, match=r"^CIFAR-10 not found in .* and could not be downloaded: put "):
        build_dataset(cfg.dataset)


def test_the_hub_unreachable_says_so_for_glue(tmp_path: Path, minilm_dir: Path):
    cfg = make_config(tmp_path / "run", "dataset=glue/mrpc", "model=bert", f"model.name_or_path={minilm_dir}",
                      f"paths.data_dir={tmp_path}", "dataset.download=true")
    with pytest.raises(DataNotFoundError) as caught:           # the tests run the hub libraries offline
        build_dataset(cfg.dataset)
    assert str(caught.value).startswith(f"GLUE mrpc not found in {tmp_path / 'glue' / 'mrpc'} and could not be "
                                        "downloaded: put train-*.parquet, validation-*.parquet there")


def test_the_command_line_prints_the_sentence_and_exits_2(tmp_path: Path):
    result = run_cli("dataset=cifar10", "dataset.download=false", f"paths.data_dir={tmp_path / 'data'}",
                     log_dir=tmp_path / "logs", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"flatmin: error: CIFAR-10 not found in {tmp_path / 'data'}")
