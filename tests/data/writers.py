"""Small datasets written in the real on-disk formats, for the real loaders to read.

Every writer takes ``data_dir`` (what ``paths.data_dir`` points at) and lays out the dataset's own
folder the way the official archive extracts: CIFAR's pickled batches, FGVC-Aircraft's text lists,
CUB's id tables, Stanford Cars' and Dogs' and Flowers' ``.mat`` files, Caltech-256's and Indoor-67's
folders, GLUE's parquet files with the hub's column names. The image sets carry their full class
counts with very few (8x8) images per class; many files are hard links to one JPEG to keep it fast.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
from PIL import Image

from flatmin.data import cifar


def write_image(path: Path, value: int = 0) -> Path:
    """An 8x8 RGB image filled with ``value`` (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value % 256, (3 * value) % 256, (7 * value) % 256)).save(path)
    return path


def link_image(source: Path, path: Path) -> None:
    """Another name for the image ``source`` (a hard link: same bytes, no copy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.link(source, path)


# -- CIFAR ---------------------------------------------------------------------------------------
def _pickle(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        pickle.dump(data, file, protocol=2)


def cifar_pixels(count: int, offset: int = 0) -> np.ndarray:
    """``count`` images as CIFAR rows (3072 uint8: R plane, G plane, B plane); image i is all ``(offset+i) % 256``."""
    return np.repeat((np.arange(offset, offset + count) % 256).astype(np.uint8)[:, None], 3072, axis=1)


def write_cifar10(data_dir: Path, per_batch: int = 20, test: int = 30) -> None:
    """``cifar-10-batches-py/`` with ``5 * per_batch`` training images (image i is all ``i % 256``, label
    ``i % 10``) and ``test`` test images (all ``(100 + i) % 256``, label ``i % 10``)."""
    train = 5 * per_batch
    cifar.write_cifar10(data_dir, cifar_pixels(train), [i % 10 for i in range(train)], cifar_pixels(test, 100),
                        [i % 10 for i in range(test)])


def write_cifar100(data_dir: Path, train: int = 200, test: int = 100) -> None:
    """``cifar-100-python/``: ``train``, ``test`` and ``meta`` with fine and coarse labels; fine label i % 100."""
    folder = Path(data_dir) / "cifar-100-python"
    for name, count in (("train", train), ("test", test)):
        _pickle(folder / name, {"batch_label": name, "data": cifar_pixels(count),
                                "fine_labels": [i % 100 for i in range(count)],
                                "coarse_labels": [(i % 100) // 5 for i in range(count)],
                                "filenames": [f"{name}_{i}.png" for i in range(count)]})
    _pickle(folder / "meta", {"fine_label_names": [f"fine_{i}" for i in range(100)],
                              "coarse_label_names": [f"coarse_{i}" for i in range(20)]})


# -- fine-tuning sets ----------------------------------------------------------------------------
def write_aircraft(data_dir: Path, per_class: int = 1) -> None:
    """``fgvc-aircraft-2013b/data/``: variants.txt, images_variant_{train,val,test}.txt, images/<id>.jpg."""
    data = Path(data_dir) / "fgvc-aircraft-2013b" / "data"
    variants = [f"Variant {c:03d}" for c in range(100)]          # real names have spaces too (e.g. "Cessna 172")
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("".join(f"{v}\n" for v in variants))
    image = write_image(data / "source.jpg")
    image_id = 1000000
    for split in ("train", "val", "test"):
        lines = []
        for variant in variants:
            for _ in range(per_class):
                image_id += 1
                link_image(image, data / "images" / f"{image_id}.jpg")
                lines.append(f"{image_id} {variant}\n")
        (data / f"images_variant_{split}.txt").write_text("".join(lines))
    image.unlink()


def write_flowers102(data_dir: Path, per_class: tuple[int, int, int] = (1, 1, 2)) -> None:
    """``flowers-102/``: jpg/image_NNNNN.jpg, imagelabels.mat (1-based labels), setid.mat (trnid/valid/tstid)."""
    folder = Path(data_dir) / "flowers-102"
    image = write_image(folder / "source.jpg")
    labels, ids = [], {"trnid": [], "valid": [], "tstid": []}
    for label in range(1, 103):
        for key, count in zip(ids, per_class):
            for _ in range(count):
                labels.append(label)
                ids[key].append(len(labels))
                link_image(image, folder / "jpg" / f"image_{len(labels):05d}.jpg")
    image.unlink()
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    scipy.io.savemat(folder / "setid.mat", {key: np.array([value], dtype=np.uint16) for key, value in ids.items()})


def _cars_annotations(names: list[str], labels: list[int]) -> np.ndarray:
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    annotations = np.zeros((1, len(names)), dtype=[(field, "O") for field in fields])
    for i, (name, label) in enumerate(zip(names, labels)):
        annotations[0, i] = (np.array([[0]]), np.array([[0]]), np.array([[7]]), np.array([[7]]),
                             np.array([[label + 1]], dtype=np.uint8), np.array([name]))
    return annotations


def write_cars(data_dir: Path, per_class: tuple[int, int] = (2, 1)) -> None:
    """``stanford_cars/``: cars_train/, cars_test/, devkit/cars_meta.mat, devkit/cars_train_annos.mat and
    cars_test_annos_withlabels.mat (struct arrays with 1-based ``class`` and ``fname``)."""
    folder = Path(data_dir) / "stanford_cars"
    image = write_image(folder / "source.jpg")
    for split, count, annotation_file in (("train", per_class[0], "devkit/cars_train_annos.mat"),
                                          ("test", per_class[1], "cars_test_annos_withlabels.mat")):
        labels = [label for label in range(196) for _ in range(count)]
        names = [f"{i + 1:05d}.jpg" for i in range(len(labels))]
        for name in names:
            link_image(image, folder / f"cars_{split}" / name)
        (folder / annotation_file).parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(folder / annotation_file, {"annotations": _cars_annotations(names, labels)})
    image.unlink()
    class_names = np.empty((1, 196), dtype=object)
    class_names[0, :] = [f"Make Model {c} 2012" for c in range(196)]
    scipy.io.savemat(folder / "devkit" / "cars_meta.mat", {"class_names": class_names})


def write_caltech256(data_dir: Path, per_class: int = 70) -> None:
    """``caltech256/256_ObjectCategories/NNN.name/NNN_XXXX.jpg`` for 256 classes plus 257.clutter;
    class c has ``per_class + c % 3`` images."""
    folder = Path(data_dir) / "caltech256" / "256_ObjectCategories"
    image = write_image(Path(data_dir) / "source.jpg")
    for number in range(1, 258):
        name = "257.clutter" if number == 257 else f"{number:03d}.object-{number:03d}"
        for index in range(1, per_class + (number - 1) % 3 + 1):
            link_image(image, folder / name / f"{number:03d}_{index:04d}.jpg")
    image.unlink()


def write_cub200(data_dir: Path, per_class: tuple[int, int] = (2, 1)) -> None:
    """``CUB_200_2011/``: classes.txt, images.txt, image_class_labels.txt, train_test_split.txt, images/."""
    folder = Path(data_dir) / "CUB_200_2011"
    image = write_image(folder / "source.jpg")
    classes, images, labels, split = [], [], [], []
    for label in range(1, 201):
        name = f"{label:03d}.Bird_{label}"
        classes.append(f"{label} {name}")
        for index in range(sum(per_class)):
            image_id = len(images) + 1
            relative = f"{name}/Bird_{label}_{index:04d}_{image_id}.jpg"
            link_image(image, folder / "images" / relative)
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {label}")
            split.append(f"{image_id} {1 if index < per_class[0] else 0}")
    image.unlink()
    for name, lines in (("classes.txt", classes), ("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split)):
        (folder / name).write_text("\n".join(lines) + "\n")


def write_dogs(data_dir: Path, per_class: tuple[int, int] = (2, 1)) -> None:
    """``stanford_dogs/``: Images/<synset>-<breed>/<synset>_N.jpg, train_list.mat and test_list.mat
    (cell arrays ``file_list`` and ``annotation_list``, 1-based ``labels``)."""
    folder = Path(data_dir) / "stanford_dogs"
    image = write_image(folder / "source.jpg")
    for split, count in (("train", per_class[0]), ("test", per_class[1])):
        files, labels = [], []
        for label in range(1, 121):
            breed = f"n{2085620 + label:08d}-Breed_{label}"
            for index in range(count):
                relative = f"{breed}/n{2085620 + label:08d}_{split}{index}.jpg"
                link_image(image, folder / "Images" / relative)
                files.append(relative)
                labels.append(label)
        cells = np.empty((len(files), 1), dtype=object)
        cells[:, 0] = files
        annotations = np.empty((len(files), 1), dtype=object)
        annotations[:, 0] = [name.removesuffix(".jpg") for name in files]
        scipy.io.savemat(folder / f"{split}_list.mat", {"file_list": cells, "annotation_list": annotations,
                                                        "labels": np.array(labels, dtype=np.float64)[:, None]})
    image.unlink()


def write_indoor67(data_dir: Path, per_class: tuple[int, int] = (2, 1)) -> None:
    """``indoor67/``: Images/<scene>/<file>.jpg, TrainImages.txt and TestImages.txt (CRLF line ends)."""
    folder = Path(data_dir) / "indoor67"
    image = write_image(folder / "source.jpg")
    for split, count in (("Train", per_class[0]), ("Test", per_class[1])):
        lines = []
        for scene in range(67):
            for index in range(count):
                relative = f"scene_{scene:02d}/{split.lower()}_{index}.jpg"
                link_image(image, folder / "Images" / relative)
                lines.append(relative)
        (folder / f"{split}Images.txt").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    image.unlink()


# -- GLUE ----------------------------------------------------------------------------------------
#: The hub's columns of each task (nyu-mll/glue), labels aside.
GLUE_TEXT_COLUMNS = {
    "cola": ["sentence"], "sst2": ["sentence"], "mrpc": ["sentence1", "sentence2"],
    "stsb": ["sentence1", "sentence2"], "qqp": ["question1", "question2"], "mnli": ["premise", "hypothesis"],
    "qnli": ["question", "sentence"], "rte": ["sentence1", "sentence2"], "wnli": ["sentence1", "sentence2"],
}
GLUE_CLASSES = {"cola": 2, "sst2": 2, "mrpc": 2, "stsb": 1, "qqp": 2, "mnli": 3, "qnli": 2, "rte": 2, "wnli": 2}
WORDS = "the a cat dog sat on mat ran fast slow red blue big small house tree river sky".split()


def glue_frame(task: str, rows: int, seed: int, hidden_labels: bool = False) -> pd.DataFrame:
    """``rows`` examples of ``task`` with the hub's columns; labels cycle through the classes (STS-B:
    scores in [0, 5]); ``hidden_labels`` gives -1 as the test splits do."""
    rng = np.random.default_rng(seed)
    frame = {column: [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(rows)]
             for column in GLUE_TEXT_COLUMNS[task]}
    if hidden_labels:
        frame["label"] = [-1.0 if task == "stsb" else -1] * rows
    elif task == "stsb":
        frame["label"] = rng.uniform(0, 5, size=rows).astype(np.float32)
    else:
        frame["label"] = np.arange(rows) % GLUE_CLASSES[task]
    frame["idx"] = np.arange(rows, dtype=np.int32)
    return pd.DataFrame(frame)


def glue_split_names(task: str) -> dict[str, bool]:
    """The hub's split names of ``task`` → whether its labels are hidden."""
    if task == "mnli":
        return {"train": False, "validation_matched": False, "validation_mismatched": False,
                "test_matched": True, "test_mismatched": True}
    return {"train": False, "validation": False, "test": True}


def write_glue(data_dir: Path, task: str, rows: int = 24) -> Path:
    """``glue/<task>/<split>-00000-of-00001.parquet`` for every split of the task, as on the hub."""
    folder = Path(data_dir) / "glue" / task
    folder.mkdir(parents=True, exist_ok=True)
    for index, (split, hidden) in enumerate(glue_split_names(task).items()):
        glue_frame(task, rows, seed=index, hidden_labels=hidden).to_parquet(folder / f"{split}-00000-of-00001.parquet")
    return folder
