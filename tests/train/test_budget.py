"""``trainer.budget_seconds``: the run stops after the optimizer step at which its training seconds
reach the budget, evaluates and tests that partial epoch as at a normal end, and says so in
``summary.json`` (``budget_stop``); it is one budget at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flatmin import rundir
from flatmin.errors import ConfigError
from flatmin.train import run
from flatmin.validation import validate
from tests.conftest import make_config


def test_a_spent_budget_stops_after_that_step_and_the_run_completes(tmp_path: Path):
    summary = run(make_config(tmp_path / "run", "trainer.epochs=3", "trainer.budget_seconds=1e-9"))
    stop = summary[rundir.BUDGET_STOP]
    assert summary["status"] == rundir.COMPLETED
    assert (stop["reason"], stop["epoch"], stop["step"]) == ("budget_seconds", 1, 1)     # the first step spends it
    assert stop[rundir.TRAIN_TIME] == summary["train_time_s"] > 0
    records = [json.loads(line) for line in (tmp_path / "run" / rundir.METRICS).read_text().splitlines()]
    (epoch,) = [record for record in records if record["event"] == "epoch"]              # the partial epoch
    assert (epoch["epoch"], epoch["step"], epoch[rundir.PASSES]) == (1, 1, 1) and "val/accuracy" in epoch
    assert summary["epochs"] == 1 and "test/accuracy" in summary["test"]["best_val"]
    assert (tmp_path / "run" / rundir.BEST).is_file() and (tmp_path / "run" / rundir.LAST).is_file()


def test_a_budget_not_spent_changes_nothing(tmp_path: Path):
    summary = run(make_config(tmp_path / "run", "trainer.epochs=2", "trainer.limit_train_batches=2",
                              "trainer.budget_seconds=1e9"))
    assert rundir.BUDGET_STOP not in summary and summary["epochs"] == 2 and summary["global_steps"] == 4


@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer.budget_seconds=0"], r"trainer.budget_seconds must be null or a number > 0 \(got 0\)"),
    (["trainer.budget_seconds=-5"], r"trainer.budget_seconds must be null or a number > 0 \(got -5\)"),
    (["trainer.budget_seconds=60", "trainer.budget_passes=10"],
     "trainer.budget_passes and trainer.budget_seconds cannot both be set"),
])
def test_a_bad_budget_is_one_sentence(tmp_path: Path, overrides: list[str], message: str):
    with pytest.raises(ConfigError, match=message):
        validate(make_config(tmp_path, *overrides))
