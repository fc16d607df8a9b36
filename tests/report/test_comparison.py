"""The report's comparison of methods (``python -m flatmin.report --protocol … --target …``): its CSV
files parsed against the times the sweeps were written to reach, the figures, the tables' listing of
what never reached, and every bad input as one sentence with exit status 2."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest

from flatmin.report.__main__ import main
from flatmin.report.comparison import compare
from flatmin.report.profiles import performance_profiles, profile_scores
from flatmin.report.runs import find_runs
from tests.report.conftest import completed, write_run
from tests.report.sweeps import AT, NEVER, epochs, write_trial
from tests.report.test_plots import PNG

#: The AlgoPerf sweep's times (see ``algoperf_sweep``).
TIMES = {"passes": {"sam": {"w1": 400.0, "w2": math.inf}, "sgd": {"w1": 200.0, "w2": 400.0}},
         "seconds": {"sam": {"w1": 3.0, "w2": math.inf}, "sgd": {"w1": 2.0, "w2": 4.0}}}


@pytest.fixture(scope="module")
def algoperf_sweep(tmp_path_factory, base_config) -> Path:
    """Two workloads. SGD: one trial each, 100 passes and 1 s an epoch, at the target after 2 (w1) and 4
    (w2) epochs. SAM: 200 passes and 1.5 s an epoch, two trials a workload: on w1 trial 0 at 2 epochs,
    trial 1 failed (its records reach at epoch 1); on w2 trial 0 never, trial 1 absent."""
    root = tmp_path_factory.mktemp("algoperf")
    write_trial(root / "sgd-w1", base_config, AT[2], workload="w1", trials=1)
    write_trial(root / "sgd-w2", base_config, AT[4], workload="w2", trials=1)
    sam = {"method": "sam", "passes": 200, "seconds": 1.5, "trials": 2}
    write_trial(root / "sam-w1-0", base_config, AT[2], workload="w1", trial=0, **sam)
    write_trial(root / "sam-w1-1", base_config, AT[1], workload="w1", trial=1, status="failed", **sam)
    write_trial(root / "sam-w2-0", base_config, NEVER, workload="w2", trial=0, **sam)
    return root


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))


def report(capsys, *arguments: str) -> tuple[int, str, str]:
    status = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_algoperf_writes_times_scores_and_profiles_at_full_precision(algoperf_sweep: Path, tmp_path: Path, capsys):
    status, out, err = report(capsys, algoperf_sweep, "--protocol", "algoperf", "--out", tmp_path)
    assert status == 0, err
    assert read_csv(tmp_path / "times.csv") == [["method", "workload", "unit", "time"]] + [
        [method, workload, unit, repr(TIMES[unit][method][workload])]
        for method in ("sam", "sgd") for workload in ("w1", "w2") for unit in ("passes", "seconds")]
    scores = read_csv(tmp_path / "scores.csv")
    assert scores[0] == ["unit", "method", "score"]
    expected = {unit: profile_scores(performance_profiles(TIMES[unit])) for unit in TIMES}
    assert {(unit, method): float(score) for unit, method, score in scores[1:]} == \
        {(unit, method): score for unit, by_method in expected.items() for method, score in by_method.items()}
    for unit in TIMES:
        profile = read_csv(tmp_path / f"profile_{unit}.csv")
        profiles = performance_profiles(TIMES[unit])
        assert profile[0] == ["method", *(repr(float(tau)) for tau in np.linspace(1.0, 4.0, 100))]
        assert {row[0]: [float(value) for value in row[1:]] for row in profile[1:]} == \
            {method: rho.tolist() for method, rho in profiles.rho.items()}
    for name in ("profile_passes.png", "profile_seconds.png", "curves_passes.png", "curves_seconds.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG and (tmp_path / name).stat().st_size > 5_000
    never = out[out.index("### Counted as never reaching the target"):]
    assert f"| {algoperf_sweep / 'sam-w1-1'} | failed | the run failed |" in never
    assert "| sam · w2 · study 0, trial 1 | missing | no run directory for this trial of the sweep |" in never
    assert "| sam | 400 (1/1 reached) | ∞ (0/1 reached) |" in out            # the passes table


def test_the_speedup_charges_a_never_reached_time_the_budget_plus_one(algoperf_sweep: Path):
    """Budgets: the largest reading any trial of the workload logged (w2: SAM's 3 epochs × 200 passes, SGD's 4
    epochs)."""
    comparison = compare(find_runs([algoperf_sweep]), "algoperf", {}, ("passes", "epochs"), r_max=2.0)
    assert comparison.baseline == "sgd" and comparison.budgets["passes"] == {"w1": 400.0, "w2": 600.0}
    assert comparison.budgets["epochs"] == {"w1": 2.0, "w2": 4.0}
    speedup = math.exp((math.log(200 / 400) + math.log(400 / 601)) / 2)
    assert comparison.speedups["passes"] == {"sam": pytest.approx(speedup, rel=1e-12), "sgd": 1.0}
    assert comparison.speedups["epochs"]["sam"] == pytest.approx(math.sqrt(2 / 2 * 4 / 5), rel=1e-12)
    assert comparison.profiles["passes"].taus[-1] == 2.0                      # --r-max: the grid's end and the cut
    assert comparison.profiles["passes"].ratios["sam"] == {"w1": 2.0, "w2": math.inf}


def test_csv_and_latex_formats_of_a_tuning_protocol(algoperf_sweep: Path, tmp_path: Path, capsys):
    assert report(capsys, algoperf_sweep, "--protocol", "algoperf", "--format", "csv", "--out", tmp_path)[0] == 0
    assert (tmp_path / "report.csv").read_text() == (tmp_path / "times.csv").read_text()
    status, out, _ = report(capsys, algoperf_sweep, "--protocol", "algoperf", "--format", "latex", "--unit", "epochs")
    assert status == 0 and r"\section*{Comparison of methods: time to target}" in out and r"$\infty$" in out


@pytest.fixture(scope="module")
def crowded_sweep(tmp_path_factory, base_config) -> Path:
    """SGD: three tuning trials (trial 1 best), reseeds 1-3 at the target after 2, 3 epochs and never, one-shot
    runs 0-2 after 1, 1 and 2 epochs; the third reseed's device differs."""
    root = tmp_path_factory.mktemp("crowded")
    common = {"protocol": "crowded_valley", "study": None}
    for index, final in enumerate((0.8, 0.95, 0.9)):
        write_trial(root / f"tune{index}", base_config, [0.5, final], trial=index, trials=3, seed=42,
                    point={"optimizer.lr": 0.1 * (index + 1)}, **common)
    for k, accuracies in enumerate((AT[2], AT[3], NEVER), 1):
        write_trial(root / f"reseed{k}", base_config, accuracies, phase="reseed", trial=None, reseed=k, seed=42 + k,
                    test=0.9 + 0.01 * k, point={"optimizer.lr": 0.2}, device="cuda:0" if k == 3 else "cpu", **common)
    for k, accuracies in enumerate((AT[1], AT[1], AT[2])):
        write_trial(root / f"oneshot{k}", base_config, accuracies, phase="oneshot", trial=None, reseed=k, seed=42 + k,
                    test=0.8, point={}, **common)
    return root


def test_crowded_valley_compares_the_reseeds_median_and_the_one_shot_median(crowded_sweep: Path, tmp_path: Path,
                                                                           capsys):
    status, out, err = report(capsys, crowded_sweep, "--protocol", "crowded_valley", "--unit", "epochs",
                              "--out", tmp_path)
    assert status == 0, err
    assert read_csv(tmp_path / "times.csv")[1:] == [["sgd", "digits/SmallCNN", "epochs", "3.0"],
                                                    ["sgd (one-shot)", "digits/SmallCNN", "epochs", "1.0"]]
    assert "| sgd | digits/SmallCNN | 1 | optimizer.lr=0.2 | val/accuracy = 0.95 | 3/3 |" in out
    assert "| sgd | digits/SmallCNN | 0.92 ± 0.01 [0.8952, 0.9448] (n=3) | 0.8 ± 0 [0.8, 0.8] (n=3) | none |" in out
    assert "warning" not in err                                        # seconds not compared
    assert "ran on different devices (cpu, cuda)" in report(capsys, crowded_sweep, "--protocol", "crowded_valley")[2]


def test_seconds_on_two_gpu_models_are_warned_about_though_both_ran_on_cuda_0(tmp_path: Path, base_config, capsys):
    for k, gpu in enumerate(("NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3")):
        write_trial(tmp_path / f"run{k}", base_config, AT[2], protocol="crowded_valley", phase="oneshot", study=None,
                    trial=None, reseed=k, seed=k, point={}, device="cuda:0", device_name=gpu)
    err = report(capsys, tmp_path, "--protocol", "crowded_valley", "--unit", "seconds")[2]
    assert "ran on different devices (NVIDIA A100-SXM4-80GB, NVIDIA H100 80GB HBM3)" in err


def test_seeds_with_a_target_add_the_comparison_to_todays_report(synthetic_runs: Path, capsys):
    today = report(capsys, synthetic_runs)[1]
    assert report(capsys, synthetic_runs, "--protocol", "seeds", "--unit", "epochs", "--r-max", "3")[1] == today
    status, out, err = report(capsys, synthetic_runs, "--target", "val/accuracy=0.9", "--unit", "epochs")
    assert status == 0, err
    before, comparison = out.split("## Comparison of methods: time to target\n")
    assert today.startswith(before.rstrip("\n"))
    # SAM's runs reach 0.9 (0.970 - 0.1 / epoch) at epoch 2; the digits runs never, and the failed and unfinished
    # ones (which record no Hydra choices) count among their configuration's seeds and are listed.
    assert "| sam · optimizer.rho=0.05 | no runs (∞) | 2 (3/3 reached) | no runs (∞) | no runs (∞) |" in comparison
    assert "| sgd | no runs (∞) | 2 (2/2 reached) | no runs (∞) | ∞ (0/4 reached) |" in comparison
    assert f"| {synthetic_runs / 'digits' / '2'} | failed |" in comparison


def test_a_method_without_runs_on_a_workload_never_reaches_it(tmp_path: Path, base_config, capsys):
    for name, method, workload in (("a", "sgd", "w1"), ("b", "sgd", "w2"), ("c", "sam", "w1")):
        write_run(tmp_path / name, base_config, {"tuning.workload": workload, "optimizer.name": method}, None,
                  completed(0.9), epochs(AT[1]))
    status, out, err = report(capsys, tmp_path, "--target", "val/accuracy=0.9", "--unit", "steps", "--out",
                              tmp_path / "out")
    assert status == 0, err
    assert ["sam", "w2", "steps", "inf"] in read_csv(tmp_path / "out" / "times.csv")
    assert "| sam · w2 | missing | no runs of this method on this workload |" in out


@pytest.fixture(scope="module")
def bad_sweeps(tmp_path_factory, base_config) -> Path:
    """``untargeted``: trials recording no target; ``twice``: two runs for one (study, trial)."""
    root = tmp_path_factory.mktemp("bad")
    write_trial(root / "untargeted" / "0", base_config, target=None)
    write_trial(root / "twice" / "0", base_config)
    write_trial(root / "twice" / "1", base_config)
    return root


@pytest.mark.parametrize(("folder", "arguments", "sentence"), [
    ("algoperf", ["--protocol", "crowded_valley"], "There is no trial of --protocol crowded_valley under the paths"),
    ("untargeted", ["--protocol", "algoperf"], "Workload digits/SmallCNN has no target: its runs record none"),
    ("algoperf", ["--target", "val/accuracy"], "--target 'val/accuracy' does not parse"),
    ("algoperf", ["--target", "val/accuracy=high"], "--target 'val/accuracy=high' does not parse"),
    ("algoperf", ["--target", ":val/accuracy=0.9"], "--target ':val/accuracy=0.9' does not parse"),
    ("algoperf", ["--target", "val/accuracy=nan"], "--target 'val/accuracy=nan' does not parse"),
    ("algoperf", ["--target", "w3:val/accuracy=0.9"], "--target names workload w3, which no run has (the "
                                                      "workloads: w1, w2)."),
    ("algoperf", ["--target", "w1:val/loss=1", "--target", "w1:val/loss=2"], "--target is given twice for w1."),
    ("algoperf", ["--protocol", "algoperf", "--baseline", "adam"], "--baseline adam is none of the methods compared "
                                                                   "(sam, sgd)."),
    ("algoperf", ["--protocol", "algoperf", "--r-max", "1"], "--r-max must be a number > 1 (got '1')."),
    ("algoperf", ["--protocol", "algoperf", "--r-max", "four"], "--r-max must be a number > 1 (got 'four')."),
    ("twice", ["--protocol", "algoperf"], "Two runs for one (method, workload, study, trial) = (sgd, digits/SmallCNN, "
                                          "0, 0)"),
], ids=["no-trials", "no-target", "no-value", "not-a-number", "empty-workload", "nan", "unknown-workload",
        "twice", "baseline", "r-max", "r-max-text", "duplicate"])
def test_bad_input_is_one_sentence_and_exit_status_2(algoperf_sweep: Path, bad_sweeps: Path, capsys, folder: str,
                                                     arguments: list[str], sentence: str):
    path = algoperf_sweep if folder == "algoperf" else bad_sweeps / folder
    status, out, err = report(capsys, path, *arguments)
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flatmin.report: error: ") and sentence in lines[0], err
