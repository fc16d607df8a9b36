"""GLUE (Wang et al., ICLR 2019) through the ``datasets`` library, tokenised with the model's tokenizer.

Where the files come from, in order:

1. local files in the hub's layout, ``<data_dir>/glue/<task>/<split>-*.parquet`` (what
   ``hf download nyu-mll/glue --repo-type dataset --local-dir <data_dir>/glue`` leaves),
   or ``<split>.tsv`` with the same columns and a header row;
2. with ``dataset.download=true``, the hub dataset ``nyu-mll/glue`` (cached by ``datasets``);
3. otherwise one sentence saying where to put the files.

Each task's config names its text columns, its class count (STS-B: 1, a regression), its metrics
(``flatmin.data.metrics``) and its evaluation splits: ``validation`` as ``val``; MNLI evaluates
``validation_matched`` as ``val`` and ``validation_mismatched`` as ``val_mismatched``. The test
labels are hidden (-1), so GLUE runs have no test split; the dev-set numbers are the ``val`` ones.

Sentences are tokenised once, truncated to ``dataset.max_length`` (128), and padded per batch to
the longest sequence (dynamic padding) by :class:`TextCollator`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from flatmin.data.files import DatasetFiles
from flatmin.data.label_noise import apply_label_noise
from flatmin.data.splits import DataSplits
from flatmin.errors import DataFormatError
from flatmin.pretrained import load_pretrained, offline_unless_reachable


def glue_files(cfg: DictConfig) -> DatasetFiles:
    """The local files of the task ``cfg.task_name`` (for the missing-data sentence)."""
    splits = ["train", *cfg.eval_splits.values()]
    return DatasetFiles(
        title=f"GLUE {cfg.task_name}", folder=f"glue/{cfg.task_name}",
        required=tuple(f"{split}-*.parquet" for split in splits),
        what=", ".join(f"{split}-*.parquet" for split in splits),
        source=f"the {cfg.task_name}/ folder of the hub dataset {cfg.hub}, as hf download {cfg.hub} "
               f"--repo-type dataset --include '{cfg.task_name}/*' --local-dir <data_dir>/glue leaves it; "
               f"or <split>.tsv files with the same columns; or run once with network and dataset.download=true")


def split_files(folder: Path, split: str) -> list[Path]:
    """The files of one split: ``<split>-*.parquet`` (the hub's shards) or ``<split>.parquet``, else ``<split>.tsv``."""
    parquet = sorted(folder.glob(f"{split}-*.parquet")) + sorted(folder.glob(f"{split}.parquet"))
    return parquet or sorted(folder.glob(f"{split}.tsv"))


def read_split(paths: list[Path]) -> datasets.Dataset:
    """One split from its parquet shards or its TSV file (header row, no quoting)."""
    files = [str(path) for path in paths]
    if paths[0].suffix == ".parquet":
        return datasets.load_dataset("parquet", data_files=files, split="train")
    return datasets.load_dataset("csv", data_files=files, delimiter="\t", quoting=csv.QUOTE_NONE, split="train")


def read_glue(cfg: DictConfig) -> dict[str, datasets.Dataset]:
    """The raw train and evaluation splits of the task, from local files or else the hub."""
    files = glue_files(cfg)
    found = {name: split_files(files.root(cfg.data_dir), name) for name in ["train", *cfg.eval_splits.values()]}
    if all(found.values()):
        return {name: read_split(paths) for name, paths in found.items()}
    if not cfg.download:
        raise files.not_found(cfg.data_dir)
    offline_unless_reachable()
    try:
        hub = datasets.load_dataset(cfg.hub, cfg.task_name)
    except Exception as error:
        raise files.not_found(cfg.data_dir, download_failed=True) from error
    return {name: hub[name] for name in found}


class Tokenise:
    """Tokenise a batch of examples: one text column, or a pair, truncated to ``max_length``."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, columns: list[str], max_length: int) -> None:
        self.tokenizer = tokenizer
        self.columns = columns
        self.max_length = max_length

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return self.tokenizer(*(batch[column] for column in self.columns), truncation=True,
                              max_length=self.max_length)


class TextCollator:
    """Pad tokenised examples to the longest in the batch; returns ``(inputs, labels)`` as tensors."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, regression: bool) -> None:
        self.tokenizer = tokenizer
        self.label_dtype = torch.float32 if regression else torch.long

    def __call__(self, examples: list[dict[str, Any]]) -> tuple[dict[str, Tensor], Tensor]:
        labels = torch.tensor([example["label"] for example in examples], dtype=self.label_dtype)
        features = [{key: value for key, value in example.items() if key != "label"} for example in examples]
        return dict(self.tokenizer.pad(features, return_tensors="pt")), labels


def check_columns(split: datasets.Dataset, name: str, cfg: DictConfig) -> None:
    """The split has the task's text columns and a label column with labels the task knows."""
    missing = [column for column in (*cfg.text_columns, "label") if column not in split.column_names]
    if missing:
        raise DataFormatError(f"GLUE {cfg.task_name} split {name} has no column {', '.join(missing)} "
                              f"(it has {', '.join(split.column_names)}).")
    if cfg.task == "classification":
        unknown = sorted(set(split.unique("label")) - set(range(cfg.num_classes)))
        if unknown:
            raise DataFormatError(f"GLUE {cfg.task_name} split {name} has labels {unknown} outside "
                                  f"0..{cfg.num_classes - 1}.")


def build_glue(cfg: DictConfig) -> DataSplits:
    """The GLUE task's train and evaluation splits, tokenised with ``cfg.tokenizer``."""
    raw = read_glue(cfg)
    tokenizer = load_pretrained(lambda: AutoTokenizer.from_pretrained(cfg.tokenizer),
                                f"The tokenizer of {cfg.tokenizer}", cfg.tokenizer, "model.name_or_path")
    tokenise = Tokenise(tokenizer, list(cfg.text_columns), cfg.max_length)
    tokenised = {}
    for name, split in raw.items():
        check_columns(split, name, cfg)
        tokenised[name] = split.map(tokenise, batched=True, desc=f"Tokenising {cfg.task_name} {name}",
                                    remove_columns=[c for c in split.column_names if c != "label"])
    train = tokenised.pop("train")
    labels, record = apply_label_noise(np.asarray(train["label"]), cfg.num_classes, cfg.get("label_noise"), cfg.name)
    if record is not None:
        train = train.remove_columns("label").add_column("label", labels.tolist())
    evaluation = {prefix: tokenised[split] for prefix, split in cfg.eval_splits.items()}
    return DataSplits(train=train, val=evaluation.pop("val"), test=None, num_classes=cfg.num_classes,
                      extra_val=evaluation, collate=TextCollator(tokenizer, cfg.task == "regression"),
                      label_noise=record)
