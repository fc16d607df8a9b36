"""``scripts/bench_sharpness.py`` runs: every measure is timed per unit of its work against an SGD step."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_each_measure_is_timed_per_unit_against_an_sgd_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["bench_sharpness.py", "--model", "small_cnn", "--samples", "6", "--batch", "4",
                                      "--units", "2", "--rounds", "1", "--json", str(out)])
    runpy.run_path(str(ROOT / "scripts" / "bench_sharpness.py"), run_name="__main__")
    figures = json.loads(out.read_text())
    assert figures["batches_per_subset"] == 2 and figures["sgd_step_s"] > 0      # batches of 4 and 2
    assert [row["measure"] for row in figures["rows"]] == ["hessian", "esd", "worst_case", "average", "landscape"]
    assert all(row["seconds_per_unit"] > 0 and row["sgd_steps_per_unit"] > 0 for row in figures["rows"])
