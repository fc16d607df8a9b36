"""``make reproduce-sam-wrn16`` end to end, shrunk to minutes: the whole sweep on CIFAR-10 files in
the real format, then the report's table beside the published numbers; run again, it continues
(finished runs are kept, not redone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.data.writers import write_cifar10

TINY = ("dataset.download=false dataset.num_workers=0 dataset.batch_size=16 model.widen_factor=1 trainer.epochs=1 "
        "trainer.limit_train_batches=1 trainer.device=cpu trainer.progress_bar=false")


def make_reproduce(tmp_path: Path) -> subprocess.CompletedProcess:
    overrides = f"paths.data_dir={tmp_path / 'data'} {TINY}"
    return subprocess.run(["make", "reproduce-sam-wrn16", f"PYTHON={sys.executable}",
                           f"REPRODUCE_DIR={tmp_path / 'out'}", f"REPRODUCE_OVERRIDES={overrides}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "WANDB_SILENT": "true"})


@pytest.mark.slow
def test_make_reproduce_runs_the_sweep_and_ends_in_the_published_table(tmp_path: Path):
    write_cifar10(tmp_path / "data", per_batch=20, test=30)
    first = make_reproduce(tmp_path)
    assert first.returncode == 0, first.stderr[-4000:]
    sweep = tmp_path / "out" / "sam_cifar_wrn16"
    summaries = [json.loads(path.read_text()) for path in sorted(sweep.glob("*/summary.json"))]
    assert len(summaries) == 9 and {s["status"] for s in summaries} == {"completed"}
    report = (sweep / "report" / "report.md").read_text()
    assert "WRN-16-8 on CIFAR-10" in report and "2.86" in report and "2.55" in report      # SAM, ASAM published
    stamps = {path: path.stat().st_mtime_ns for path in sweep.glob("*/summary.json")}
    again = make_reproduce(tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    assert {path: path.stat().st_mtime_ns for path in sweep.glob("*/summary.json")} == stamps
