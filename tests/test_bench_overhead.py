"""``scripts/bench_overhead.py`` runs: flatmin's epoch and the hand loop train the same number of steps."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_the_quick_start_epoch_is_timed_against_the_bare_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["bench_overhead.py", "--setups", "quickstart", "--optimizers", "sam",
                                      "--rounds", "1", "--json", str(out)])
    runpy.run_path(str(ROOT / "scripts" / "bench_overhead.py"), run_name="__main__")
    rows = json.loads(out.read_text())
    assert [(row["setup"], row["optimizer"], row["steps_per_epoch"]) for row in rows] == \
        [("quickstart", "sam", 16)]                                      # 1,078 training digits in batches of 64
    assert rows[0]["flatmin_epoch_s"] > 0 and rows[0]["bare_epoch_s"] > 0 and rows[0]["ratio"] > 0
