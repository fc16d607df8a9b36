"""GLUE from parquet (and TSV) files in the hub's layout, for every task: columns, labels, splits, and
the metric names a run reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertConfig, BertModel

from flatmin.data import build_dataset
from flatmin.data import GLUE_TASKS
from flatmin.errors import DataFormatError
from flatmin.train import run
from tests.conftest import make_config
from tests.data.writers import GLUE_CLASSES, glue_frame, write_glue

TOKENISED = {"input_ids", "token_type_ids", "attention_mask", "label"}

#: The metrics each task reports, named as the papers name them (docs/recipes.md, "tracer_glue").
METRIC_NAMES = {
    "cola": ["val/mcc"], "sst2": ["val/accuracy"], "mrpc": ["val/f1", "val/accuracy"],
    "stsb": ["val/pearson", "val/spearman"], "qqp": ["val/accuracy", "val/f1"],
    "mnli": ["val/accuracy", "val_mismatched/accuracy"], "qnli": ["val/accuracy"], "rte": ["val/accuracy"],
    "wnli": ["val/accuracy"],
}


def glue_config(data_dir: Path, task: str, model_dir: Path, *overrides: str):
    return make_config(data_dir / "run", f"dataset=glue/{task}", "model=bert", f"model.name_or_path={model_dir}",
                       f"paths.data_dir={data_dir}", *overrides)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory, minilm_dir: Path) -> Path:
    """A 1-layer BERT with random weights saved with MiniLM's real tokenizer: a fast stand-in for the
    metric-name runs (the pretrained model itself is fine-tuned in tests/train/test_text.py)."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_every_task_is_registered():
    assert set(GLUE_TASKS) == set(METRIC_NAMES) == set(GLUE_CLASSES)


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_parquet_files_give_tokenised_splits_with_the_task_labels(tmp_path: Path, minilm_dir: Path, task: str):
    write_glue(tmp_path, task, rows=24)
    cfg = glue_config(tmp_path, task, minilm_dir)
    splits = build_dataset(cfg.dataset)
    assert splits.test is None, "GLUE test labels are hidden"
    assert splits.num_classes == GLUE_CLASSES[task]
    evaluation = [splits.val, *splits.extra_val.values()]
    assert sorted(splits.extra_val) == (["val_mismatched"] if task == "mnli" else [])
    for split in (splits.train, *evaluation):
        assert set(split.column_names) == TOKENISED and len(split) == 24
    labels = splits.train["label"]
    if task == "stsb":
        assert all(0 <= label <= 5 for label in labels) and len(set(labels)) > 2
    else:
        assert sorted(set(labels)) == list(range(GLUE_CLASSES[task]))
    inputs, targets = splits.collate([splits.train[i] for i in range(4)])
    assert set(inputs) == TOKENISED - {"label"}
    assert inputs["input_ids"].shape[0] == 4 and inputs["input_ids"].shape[1] <= cfg.dataset.max_length
    assert targets.dtype.is_floating_point == (task == "stsb")


def test_sentence_pairs_are_encoded_as_pairs_and_truncated(tmp_path: Path, minilm_dir: Path):
    write_glue(tmp_path, "mrpc", rows=4)
    splits = build_dataset(glue_config(tmp_path, "mrpc", minilm_dir, "dataset.max_length=8").dataset)
    example = splits.train[0]
    assert len(example["input_ids"]) == 8
    assert set(example["token_type_ids"]) == {0, 1}, "two segments"


def test_tsv_files_with_the_same_columns_are_read_too(tmp_path: Path, minilm_dir: Path):
    folder = tmp_path / "glue" / "rte"
    folder.mkdir(parents=True)
    for seed, split in enumerate(("train", "validation")):
        glue_frame("rte", 10, seed).to_csv(folder / f"{split}.tsv", sep="\t", index=False, quoting=csv.QUOTE_NONE)
    splits = build_dataset(glue_config(tmp_path, "rte", minilm_dir).dataset)
    assert (len(splits.train), len(splits.val)) == (10, 10)
    assert sorted(set(splits.train["label"])) == [0, 1]


def test_label_noise_flips_training_labels_of_a_classification_task_only(tmp_path: Path, minilm_dir: Path):
    write_glue(tmp_path, "mrpc", rows=24)
    clean = build_dataset(glue_config(tmp_path, "mrpc", minilm_dir).dataset)
    noisy = build_dataset(glue_config(tmp_path, "mrpc", minilm_dir, "dataset.label_noise.rate=0.5").dataset)
    changed = [i for i, (a, b) in enumerate(zip(clean.train["label"], noisy.train["label"])) if a != b]
    assert changed == noisy.label_noise.indices and len(changed) == 12
    assert noisy.val["label"] == clean.val["label"]
    assert noisy.train["input_ids"] == clean.train["input_ids"]


def test_files_without_the_task_columns_are_one_sentence(tmp_path: Path, minilm_dir: Path):
    folder = write_glue(tmp_path, "qnli", rows=4)
    glue_frame("qnli", 4, 0).rename(columns={"question": "query"}).to_parquet(
        folder / "train-00000-of-00001.parquet")
    with pytest.raises(DataFormatError, match=r"^GLUE qnli split train has no column question \(it has "):
        build_dataset(glue_config(tmp_path, "qnli", minilm_dir).dataset)


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_a_run_reports_the_task_metrics_by_their_paper_names(tmp_path: Path, tiny_bert_dir: Path, task: str):
    write_glue(tmp_path, task, rows=16)
    cfg = glue_config(tmp_path, task, tiny_bert_dir, "trainer=debug", "optimizer=adamw", "dataset.batch_size=8")
    summary = run(cfg)
    names = METRIC_NAMES[task]
    assert cfg.trainer.monitor == names[0]
    assert all(name in summary["best_val"] for name in names)
    assert not any(key.startswith("val") and key not in names and not key.endswith("/loss")
                   for key in summary["best_val"])
    assert summary["test"] == {}
    assert ("train/accuracy" in summary["final"]) == (task != "stsb")
    assert json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())["status"] == "completed"
