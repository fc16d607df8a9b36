"""``python -m flatmin.report``: formats, files, bad input, and a real sweep end to end."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flatmin.report.__main__ import main
from flatmin.report.published import BEST_EPOCH_ON_TEST
from tests.conftest import ROOT, run_cli


def test_formats_and_files(synthetic_runs: Path, tmp_path: Path, capsys):
    assert main([str(synthetic_runs), "--format", "csv", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == (tmp_path / "report.csv").read_text()
    assert list(csv.reader(io.StringIO(captured.out)))[0][0] == "experiment"
    assert (tmp_path / "not_included.csv").read_text().count("\n") == 3
    assert f"not included: {synthetic_runs / 'digits' / '2'} (failed: RuntimeError: out of memory)" in captured.err
    assert {path.name for path in tmp_path.glob("*.png")} == {"no_experiment_curves.png", "no_experiment_sharpness.png",
                                                             "sam_cifar_wrn28_curves.png"}
    assert main([str(synthetic_runs / "sam_sweep"), "--format", "latex"]) == 0
    assert capsys.readouterr().out.startswith("% flatmin report")


def test_best_on_test_prints_the_labelled_table_only_when_asked(gam_runs: Path, capsys):
    assert main([str(gam_runs)]) == 0
    assert BEST_EPOCH_ON_TEST not in capsys.readouterr().out
    assert main([str(gam_runs), "--best-on-test"]) == 0
    text = capsys.readouterr().out
    table = text[text.index(f"### GAM (Zhang et al., CVPR 2023), CIFAR: test accuracy (%), {BEST_EPOCH_ON_TEST}"):]
    assert "| ResNet-18 · GAM | 96.75 ± 1.06 " in table  # the mean over seeds of 96.0 and 97.5
    assert f"| test/accuracy, {BEST_EPOCH_ON_TEST} (%) |" in text[text.index("### Every configuration"):]


@pytest.mark.parametrize(("arguments", "sentence"), [
    (["nowhere"], "nowhere is not a directory; give run or sweep directories."),
    (["."], "No flatmin run directory under"),
], ids=["missing", "no-runs"])
def test_bad_input_is_one_sentence_and_exit_status_2(tmp_path: Path, capsys, arguments, sentence):
    (tmp_path / "sub").mkdir()
    assert main([str(tmp_path / argument) for argument in arguments]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flatmin.report: error: ") and sentence in lines[0]


def test_an_unknown_format_is_refused(synthetic_runs: Path, capsys):
    with pytest.raises(SystemExit) as caught:
        main([str(synthetic_runs), "--format", "html"])
    assert caught.value.code == 2
    assert "invalid choice: 'html'" in capsys.readouterr().err


def test_a_real_sweep_end_to_end(tmp_path: Path):
    run_cli("-m", "optimizer=sgd,sam", "seed=0,1", "trainer.epochs=1", "trainer.limit_train_batches=2",
            "trainer.sharpness=true", "trainer.sharpness_samples=64", "trainer.sharpness_max_iter=3", log_dir=tmp_path)
    (sweep,) = (tmp_path / "multiruns").iterdir()
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "flatmin.report", str(sweep), "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summaries = {job: json.loads((sweep / job / "summary.json").read_text()) for job in ("0", "1", "2", "3")}
    for method, jobs in (("sgd", ("0", "1")), ("sam", ("2", "3"))):  # Hydra's job order: optimizer, then seed
        assert {summaries[job]["choices"]["optimizer"] for job in jobs} == {method}
        accuracies = [100 * summaries[job]["test"]["best_val"]["test/accuracy"] for job in jobs]
        assert f"| {method} | {sum(accuracies) / 2:.2f} ± " in result.stdout
        traces = [summaries[job]["sharpness"]["trace"] for job in jobs]
        row = next(line for line in result.stdout.splitlines() if line.startswith(f"| {method} · digits · small_cnn"))
        assert f"{sum(traces) / 2:.4g} ± " in row and row.count("(n=2)") == 10
    assert "4 run directories under" in result.stdout and "4 completed, 0 failed, 0 diverged, 0 interrupted, 0 unfinished." in result.stdout
    for name in ("report.md", "no_experiment_curves.png", "no_experiment_sharpness.png"):
        assert (out / name).stat().st_size > 0
