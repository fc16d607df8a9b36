"""Time to target (``flatmin.report.targets``): the first epoch record at the target, in epochs, steps,
passes and seconds, from records and from run directories in the real format; runs that did not
complete never reach it; records written before ``passes`` and ``train_time_s`` use the fallbacks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from flatmin.report.targets import UNITS, time_to_target
from flatmin.train import run
from tests.conftest import make_config
from tests.report.conftest import completed, write_run

#: Three evaluations: accuracy 0.5, 0.8, 0.8; losses falling; a step record between them.
RECORDS = [
    {"event": "epoch", "epoch": 1, "step": 10, "passes": 20, "train_time_s": 1.5, "epoch_time_s": 1.5,
     "val/accuracy": 0.5, "val/loss": 1.0},
    {"event": "step", "epoch": 2, "step": 15, "val/accuracy": 0.99, "val/loss": 0.01},
    {"event": "epoch", "epoch": 2, "step": 20, "passes": 40, "train_time_s": 3.25, "epoch_time_s": 1.75,
     "val/accuracy": 0.8, "val/loss": 0.6},
    {"event": "epoch", "epoch": 3, "step": 30, "passes": 60, "train_time_s": 5.0, "epoch_time_s": 1.75,
     "val/accuracy": 0.8, "val/loss": 0.4},
]


@pytest.mark.parametrize(("unit", "expected"), [("epochs", 2.0), ("steps", 20.0), ("passes", 40.0),
                                                 ("seconds", 3.25)])
def test_the_first_evaluation_at_the_target_is_read_in_each_unit(unit: str, expected: float):
    assert time_to_target(RECORDS, "val/accuracy", 0.8, unit=unit) == expected      # >= for a higher-better metric
    assert isinstance(time_to_target(RECORDS, "val/accuracy", 0.8, unit=unit), float)


def test_step_records_are_not_evaluations_and_a_loss_is_better_low():
    assert time_to_target(RECORDS, "val/accuracy", 0.9) == math.inf          # only the step record has 0.99
    assert time_to_target(RECORDS, "val/loss", 0.6) == 2.0                   # auto: <= for a loss
    assert time_to_target(RECORDS, "val/loss", 0.6, mode="max") == 1.0
    assert time_to_target(RECORDS, "val/accuracy", 0.6, mode="min") == 1.0


@pytest.mark.parametrize("value", [None, float("nan"), "0.9", True])
def test_a_missing_null_or_non_number_metric_never_reaches(value):
    records = [{"event": "epoch", "epoch": 1, "step": 1, "passes": 1, "train_time_s": 1.0, "val/accuracy": value},
               {"event": "epoch", "epoch": 2, "step": 2, "passes": 2, "train_time_s": 2.0}]
    assert time_to_target(records, "val/accuracy", 0.0) == math.inf


@pytest.mark.parametrize(("arguments", "message"), [({"unit": "minutes"}, "unit must be one of epochs, steps, "
                                                     "passes, seconds"), ({"mode": "up"}, "mode must be auto")])
def test_an_unknown_unit_or_mode_is_refused(arguments: dict, message: str):
    with pytest.raises(ValueError, match=message):
        time_to_target(RECORDS, "val/accuracy", 0.8, **arguments)


def run_dir(tmp_path: Path, base_config: dict, status: str | None, records: list[dict], name: str = "run",
            **settings) -> Path:
    summary = None if status is None else {**completed(0.9), "status": status, "passes_per_step": 2.0}
    return write_run(tmp_path / name, base_config, settings, {"optimizer": "sam"}, summary,
                     [{key: value for key, value in record.items() if key != "event"} for record in records
                      if record["event"] == "epoch"])


@pytest.mark.parametrize("unit", UNITS)
def test_a_completed_run_directory_reads_its_records(tmp_path: Path, base_config: dict, unit: str):
    expected = time_to_target(RECORDS, "val/accuracy", 0.8, unit=unit)
    assert time_to_target(run_dir(tmp_path, base_config, "completed", RECORDS), "val/accuracy", 0.8,
                          unit=unit) == expected
    assert time_to_target(str(tmp_path / "run"), "val/accuracy", 0.8, unit=unit) == expected


@pytest.mark.parametrize("status", ["failed", "diverged", "interrupted", None])
def test_a_run_that_did_not_complete_never_reaches_whatever_its_records(tmp_path: Path, base_config: dict,
                                                                       status: str | None):
    path = run_dir(tmp_path, base_config, status, RECORDS)                 # None: unfinished, no summary.json
    assert all(time_to_target(path, "val/accuracy", 0.5, unit=unit) == math.inf for unit in UNITS)


def test_records_written_before_passes_and_seconds_use_the_fallbacks(tmp_path: Path, base_config: dict):
    """Passes: step × accumulate_grad_batches × the summary's passes per (micro-)step; seconds: the sum
    of epoch_time_s so far."""
    old = [{key: value for key, value in record.items() if key not in ("passes", "train_time_s")}
           for record in RECORDS]
    path = run_dir(tmp_path, base_config, "completed", old, **{"trainer.accumulate_grad_batches": 3})
    assert time_to_target(path, "val/accuracy", 0.8, unit="passes") == 20 * 3 * 2.0
    assert time_to_target(path, "val/accuracy", 0.8, unit="seconds") == 1.5 + 1.75
    assert time_to_target(old, "val/accuracy", 0.8, unit="seconds") == 3.25
    with pytest.raises(ValueError, match="the records carry no 'passes'"):
        time_to_target(old, "val/accuracy", 0.8, unit="passes")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A real SAM run on digits: 3 short epochs."""
    path = tmp_path_factory.mktemp("digits") / "run"
    run(make_config(path, "optimizer=sam", "trainer.epochs=3", "trainer.limit_train_batches=4"))
    return path


def test_a_real_run_records_its_passes_and_training_seconds(digits_run: Path):
    """The trainer's epoch records carry both (the run's Stepper.passes; the running sum of epoch_time_s)."""
    epochs = [json.loads(line) for line in (digits_run / "metrics.jsonl").read_text().splitlines()]
    epochs = [record for record in epochs if record["event"] == "epoch"]
    summary = json.loads((digits_run / "summary.json").read_text())
    assert [record["passes"] for record in epochs] == [record["step"] * summary["passes_per_step"]
                                                      for record in epochs]
    assert [record["train_time_s"] for record in epochs] == pytest.approx(
        [sum(r["epoch_time_s"] for r in epochs[:i + 1]) for i in range(len(epochs))], rel=1e-12)
    target = epochs[-1]["val/accuracy"]
    first = next(record for record in epochs if record["val/accuracy"] >= target)
    assert time_to_target(digits_run, "val/accuracy", target, unit="passes") == first["passes"]
