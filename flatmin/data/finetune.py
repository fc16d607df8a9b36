"""The fine-tuning image sets of the NSO protocol (Li, Ju & Zhang, 2023), read from their own files.

Each reader returns the dataset's official splits (``docs/recipes.md``, "nso_finetune"); the configs'
``split.val_fraction`` holds out validation images from the training split where the protocol
says so. torchvision's classes read FGVC-Aircraft, Flowers-102, Stanford Cars and Caltech-256;
CUB-200-2011, Stanford Dogs and MIT Indoor-67 are read from their official file lists.

========== =========================================== ====================================
name       folder under ``paths.data_dir``              split
========== =========================================== ====================================
aircraft   ``fgvc-aircraft-2013b/``                    official train / val / test (variants)
cub200     ``CUB_200_2011/``                           official train / test, 10% of train held out
caltech256 ``caltech256/256_ObjectCategories/``        30 / 20 / 20 images per class (seeded)
cars       ``stanford_cars/``                          official train / test, 10% of train held out
dogs       ``stanford_dogs/``                          official train / test, 10% of train held out
flowers102 ``flowers-102/``                            official train / val / test
indoor67   ``indoor67/``                               TrainImages / TestImages, 10% held out
========== =========================================== ====================================
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.io
from omegaconf import DictConfig
from torchvision.datasets import Caltech256, FGVCAircraft, Flowers102, StanfordCars

from flatmin.data.files import DatasetFiles, ensure_present
from flatmin.data.images import ImageSet, Samples, assemble, listed_images
from flatmin.data.splits import DataSplits
from flatmin.data.transforms import finetune_transforms
from flatmin.errors import DataFormatError


class Flowers102Files(Flowers102):
    """torchvision's Flowers-102 reader with an existence check in place of the md5 check of
    ``imagelabels.mat`` and ``setid.mat`` (the downloaded image archive's md5 is still checked)."""

    _file_dict = {key: (name, md5 if key == "image" else None) for key, (name, md5) in Flowers102._file_dict.items()}


FILES: dict[str, DatasetFiles] = {
    "aircraft": DatasetFiles(
        "FGVC-Aircraft", "fgvc-aircraft-2013b",
        ("data/images", "data/variants.txt", "data/images_variant_train.txt", "data/images_variant_val.txt",
         "data/images_variant_test.txt"),
        "data/images/ and data/variants.txt, images_variant_{train,val,test}.txt",
        "extract fgvc-aircraft-2013b.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/, "
        "or run once with network and dataset.download=true"),
    "cub200": DatasetFiles(
        "CUB-200-2011", "CUB_200_2011",
        ("images", "images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"),
        "images/, images.txt, image_class_labels.txt, train_test_split.txt and classes.txt",
        "extract CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/"),
    "caltech256": DatasetFiles(
        "Caltech-256", "caltech256", ("256_ObjectCategories",),
        "the 256_ObjectCategories/ folder",
        "extract 256_ObjectCategories.tar from https://data.caltech.edu/records/nyy15-4j048, "
        "or run once with network and dataset.download=true"),
    "cars": DatasetFiles(
        "Stanford Cars", "stanford_cars",
        ("cars_train", "cars_test", "devkit/cars_meta.mat", "devkit/cars_train_annos.mat",
         "cars_test_annos_withlabels.mat"),
        "cars_train/, cars_test/, devkit/cars_meta.mat, devkit/cars_train_annos.mat and "
        "cars_test_annos_withlabels.mat",
        "the layout torchvision's StanfordCars reads; the original site is gone, mirrors keep the files"),
    "dogs": DatasetFiles(
        "Stanford Dogs", "stanford_dogs", ("Images", "train_list.mat", "test_list.mat"),
        "Images/, train_list.mat and test_list.mat",
        "extract images.tar and lists.tar from http://vision.stanford.edu/aditya86/ImageNetDogs/"),
    "flowers102": DatasetFiles(
        "Flowers-102", "flowers-102", ("jpg", "imagelabels.mat", "setid.mat"),
        "jpg/, imagelabels.mat and setid.mat",
        "102flowers.tgz extracted, imagelabels.mat and setid.mat from "
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/, or run once with network and dataset.download=true"),
    "indoor67": DatasetFiles(
        "MIT Indoor-67", "indoor67", ("Images", "TrainImages.txt", "TestImages.txt"),
        "Images/, TrainImages.txt and TestImages.txt",
        "extract indoorCVPR_09.tar and get the two lists from https://web.mit.edu/torralba/www/indoor.html"),
}

#: torchvision's downloader, for the sets whose class can still download.
DOWNLOADERS: dict[str, Callable[[str], object]] = {
    "aircraft": lambda data_dir: FGVCAircraft(data_dir, download=True),
    "caltech256": lambda data_dir: Caltech256(data_dir, download=True),
    "flowers102": lambda data_dir: Flowers102Files(data_dir, download=True),
}


def official_splits(open_split: Callable[[str], Any]) -> dict[str, Samples]:
    """Train/val/test samples of a torchvision reader that takes ``split=`` and keeps ``_labels``."""
    readers = {name: open_split(name) for name in ("train", "val", "test")}
    return {name: Samples.all_of(reader, reader._labels) for name, reader in readers.items()}


def read_aircraft(cfg: DictConfig) -> ImageSet:
    """FGVC-Aircraft (Maji et al., 2013): 100 variants, official train/val/test lists."""
    samples = official_splits(lambda split: FGVCAircraft(cfg.data_dir, split=split))
    return ImageSet(samples["train"].reader.classes, samples["train"], samples["val"], samples["test"])


def read_flowers102(cfg: DictConfig) -> ImageSet:
    """Oxford Flowers-102 (Nilsback & Zisserman, 2008): official train/val/test from ``setid.mat``."""
    samples = official_splits(lambda split: Flowers102Files(cfg.data_dir, split=split))
    return ImageSet(list(Flowers102.classes), samples["train"], samples["val"], samples["test"])


def read_cars(cfg: DictConfig) -> ImageSet:
    """Stanford Cars (Krause et al., 2013): 196 classes, official train/test from the devkit."""
    train, test = StanfordCars(cfg.data_dir, split="train"), StanfordCars(cfg.data_dir, split="test")
    return ImageSet(list(train.classes), Samples.all_of(train, [label for _, label in train._samples]), None,
                    Samples.all_of(test, [label for _, label in test._samples]))


def read_caltech256(cfg: DictConfig) -> ImageSet:
    """Caltech-256 (Griffin et al., 2007) without the clutter class; per class, ``split.train_per_class``
    / ``val_per_class`` / ``test_per_class`` images drawn at random with ``split.seed``."""
    reader = Caltech256(cfg.data_dir)
    classes = [name for name in reader.categories if name != "257.clutter"]
    labels = np.asarray(reader.y)
    counts = (cfg.split.train_per_class, cfg.split.val_per_class, cfg.split.test_per_class)
    rng = np.random.default_rng(cfg.split.seed)
    chosen: list[list[np.ndarray]] = [[], [], []]   # train, val, test indices per class
    for label, name in enumerate(classes):
        members = np.flatnonzero(labels == label)
        if len(members) < sum(counts):
            raise DataFormatError(f"Caltech-256 class {name} has {len(members)} images, fewer than the "
                                  f"{sum(counts)} the split needs (dataset.split).")
        drawn = rng.permutation(members)[:sum(counts)]
        for split, part in zip(chosen, np.split(drawn, np.cumsum(counts)[:-1])):
            split.append(part)
    everything = Samples.all_of(reader, labels)
    train, val, test = (everything.subset(np.sort(np.concatenate(parts))) for parts in chosen)
    return ImageSet(classes, train, val, test)


def read_cub200(cfg: DictConfig) -> ImageSet:
    """CUB-200-2011 (Wah et al., 2011): ``images.txt``, ``image_class_labels.txt`` and
    ``train_test_split.txt`` (1 = train) by image id; class names from ``classes.txt``."""
    root = FILES["cub200"].root(cfg.data_dir)

    def table(name: str) -> dict[str, str]:
        return dict(line.split(" ", 1) for line in (root / name).read_text().splitlines() if line.strip())

    paths, labels, is_train = table("images.txt"), table("image_class_labels.txt"), table("train_test_split.txt")
    classes = [name for _, name in sorted(table("classes.txt").items(), key=lambda item: int(item[0]))]
    ids = sorted(paths, key=int)
    everything = listed_images([root / "images" / paths[i] for i in ids], [int(labels[i]) - 1 for i in ids])
    train = np.array([is_train[i] == "1" for i in ids])
    return ImageSet(classes, everything.subset(np.flatnonzero(train)), None,
                    everything.subset(np.flatnonzero(~train)))


def read_dogs(cfg: DictConfig) -> ImageSet:
    """Stanford Dogs (Khosla et al., 2011): ``train_list.mat`` / ``test_list.mat`` (paths under
    ``Images/`` and 1-based labels); a class is named by its folder (``n02085620-Chihuahua``)."""
    root = FILES["dogs"].root(cfg.data_dir)
    lists = {split: scipy.io.loadmat(root / f"{split}_list.mat", squeeze_me=True) for split in ("train", "test")}
    names = {int(label) - 1: str(path).split("/")[0]
             for listing in lists.values() for path, label in zip(listing["file_list"], listing["labels"])}
    samples = {split: listed_images([root / "Images" / str(path) for path in listing["file_list"]],
                                    [int(label) - 1 for label in listing["labels"]])
               for split, listing in lists.items()}
    return ImageSet([names[label] for label in sorted(names)], samples["train"], None, samples["test"])


def read_indoor67(cfg: DictConfig) -> ImageSet:
    """MIT Indoor-67 (Quattoni & Torralba, CVPR 2009): ``TrainImages.txt`` / ``TestImages.txt`` list
    ``<class>/<file>`` under ``Images/``; the classes are the folder names in those lists."""
    root = FILES["indoor67"].root(cfg.data_dir)
    lists = {split: [line.strip() for line in (root / f"{split}Images.txt").read_text().splitlines() if line.strip()]
             for split in ("Train", "Test")}
    classes = sorted({path.split("/")[0] for paths in lists.values() for path in paths})
    index = {name: label for label, name in enumerate(classes)}
    samples = {split: listed_images([root / "Images" / path for path in paths],
                                    [index[path.split("/")[0]] for path in paths])
               for split, paths in lists.items()}
    return ImageSet(classes, samples["Train"], None, samples["Test"])


READERS: dict[str, Callable[[DictConfig], ImageSet]] = {
    "aircraft": read_aircraft,
    "cub200": read_cub200,
    "caltech256": read_caltech256,
    "cars": read_cars,
    "dogs": read_dogs,
    "flowers102": read_flowers102,
    "indoor67": read_indoor67,
}


def build_finetune(cfg: DictConfig) -> DataSplits:
    """The splits of the fine-tuning set ``cfg.name`` at 224 px with ImageNet normalisation."""
    downloader = DOWNLOADERS.get(cfg.name)
    download = (lambda: downloader(cfg.data_dir)) if downloader and cfg.get("download") else None
    ensure_present(FILES[cfg.name], cfg.data_dir, download)
    return assemble(READERS[cfg.name](cfg), cfg, *finetune_transforms(cfg))
