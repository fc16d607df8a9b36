"""``make gpu-check`` cannot rot: its CPU smoke mode runs every section end to end (a minute: slow,
run by CI through ``make test-ci-slow``), and a broken check makes the verdict BROKEN and the exit
status 1."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu_check.sh"
METHODS = sorted(path.stem for path in (ROOT / "flatmin" / "conf" / "optimizer").glob("*.yaml"))


def gpu_check(out: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    result = subprocess.run([str(SCRIPT), str(out)], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                            text=True, timeout=600)
    return result, json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_the_cpu_smoke_mode_runs_every_section(tmp_path: Path):
    result, report = gpu_check(tmp_path, DEVICE="cpu", QUICK="1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sections = report["sections"]
    assert list(sections) == ["environment", "optimizers", "trainer", "adapters", "data_path", "compile", "ddp",
                              "bench_optim"]
    assert all(section["status"] == "ok" for section in sections.values()), sections
    rows = sections["optimizers"]["figures"]["rows"]
    assert sorted((row["method"], row["precision"]) for row in rows) == \
        sorted((method, precision) for method in METHODS for precision in ("bf16", "fp16"))
    assert all(row["ms_per_step"] > 0 for row in rows)
    assert all(row["overflow_skips_and_backs_off"] for row in rows if row["precision"] == "fp16")
    assert sorted(row["method"] for row in sections["trainer"]["figures"]["digits_fp32"]) == \
        ["bsam", "esam", "nso", "sam", "sgd"]                 # the smoke mode's; a GPU runs every method
    adapters = sections["adapters"]["figures"]
    assert {key: figure["max_difference"] for key, figure in adapters.items()} == \
        {"trainer_sam_bf16": 0.0, "trainer_bsam_bf16": 0.0}        # a GPU runs fp16 with an overflow
    steps = [row for row in sections["data_path"]["figures"]["bench"] if row["kind"] == "step"]
    assert {(row["optimizer"], row["loader"]) for row in steps} == {(o, f) for o in ("sgd", "sam")
                                                                     for f in ("synthetic", "torch")}
    compiled = sections["compile"]["figures"]
    assert compiled["stepper_default"]["outputs_are_first_pass"] and compiled["train_default"]["recompiles"] >= 0
    assert "skipped" in sections["ddp"]["notes"][0]
    assert {row["method"] for row in sections["bench_optim"]["figures"]["bench_optim"]} >= \
        set(METHODS) - {"adamw"}
    summary = (tmp_path / "summary.txt").read_text()
    assert "verdict: OK (0 broken" in summary and "| sam | fp16 |" in summary
    assert (tmp_path / "sections.log").stat().st_size > 0


def test_a_broken_check_is_the_verdict_and_the_exit_status(tmp_path: Path):
    result, report = gpu_check(tmp_path, DEVICE="cuda", SECTIONS="ddp", CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 1
    assert report["sections"]["environment"]["status"] == "broken"
    assert "torch sees no CUDA device" in report["sections"]["environment"]["broken"]
    assert list(report["sections"]) == ["environment", "ddp"]
    assert "verdict: BROKEN" in (tmp_path / "summary.txt").read_text()
