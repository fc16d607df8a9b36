"""Tuning sweeps for real: ``python train.py -m sweep=algoperf`` on digits and the report's selection of
it, Crowded Valley's reseed phase taking the tuning sweep's best point, and (slow) a sweep interrupted
by SIGTERM and continued selecting what a sweep run straight through selects."""

from __future__ import annotations

import csv
import math
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from flatmin import rundir
from flatmin.report.__main__ import main as report
from flatmin.report.protocols import algoperf_scores, read_trials
from flatmin.train.run import run
from flatmin.tuning import apply_trial, draw_trials, search_space
from tests.conftest import ROOT, make_config, run_cli, start_cli

#: A two-trial AlgoPerf study of SAM on digits, a few steps an epoch.
TWO_TRIALS = ("-m", "sweep=algoperf", "optimizer=sam", "tuning.studies=1", "tuning.trials=2", "trainer.epochs=2",
              "trainer.limit_train_batches=4", "trainer.progress_bar=false")


def sweep_dir(log_dir: Path) -> Path:
    (sweep,) = (log_dir / "multiruns").iterdir()
    return sweep


def test_a_two_job_algoperf_sweep_runs_its_draws_and_the_report_scores_it(tmp_path: Path):
    run_cli(*TWO_TRIALS, log_dir=tmp_path / "logs")
    sweep = sweep_dir(tmp_path / "logs")
    jobs = [sweep / "0", sweep / "1"]
    configs = [OmegaConf.load(job / rundir.CONFIG) for job in jobs]
    draws = draw_trials(search_space(make_config(tmp_path, "optimizer=sam")), 2, 1, seed=0)[0]
    for trial, (config, point) in enumerate(zip(configs, draws)):
        assert (config.tuning.study, config.tuning.trial, config.seed) == (0, trial, 0)
        assert (config.optimizer.lr, config.optimizer.rho) == (point["optimizer.lr"], point["optimizer.rho"])
        assert OmegaConf.to_container(config.tuning.point) == {"optimizer": {"lr": point["optimizer.lr"],
                                                                             "rho": point["optimizer.rho"]}}
    trials = read_trials([sweep])
    assert sorted(trial.trial for trial in trials) == [0, 1]
    out = tmp_path / "report"
    assert report([str(sweep), "--protocol", "algoperf", "--target", "val/accuracy=0.0", "--unit", "epochs",
                   "--out", str(out)]) == 0
    with open(out / "times.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(row["method"], row["unit"], float(row["time"])) for row in rows] == [("sam", "epochs", 1.0)]


def test_the_reseed_phase_takes_the_tuning_sweeps_best_point(tmp_path: Path):
    """Crowded Valley: the tuning trial with the best final validation value gives the reseeds their point."""
    tuning = tmp_path / "tune"
    for trial in (0, 1):
        run(make_config(tuning / str(trial), "sweep=crowded_valley", "optimizer=sam", "tuning.trials=2",
                        f"tuning.trial={trial}", "trainer.epochs=1", "trainer.limit_train_batches=3"))
    finals = {trial: rundir.read_summary(tuning / str(trial))["final"]["val/accuracy"] for trial in (0, 1)}
    best = max(finals, key=lambda trial: (finals[trial], -trial))
    cfg = make_config(tmp_path / "reseed", "sweep=crowded_valley_reseed", "optimizer=sam", "seed=42",
                      f"tuning.from={tuning}", "tuning.reseed=1")
    expected = OmegaConf.load(tuning / str(best) / rundir.CONFIG).tuning.point
    assert apply_trial(cfg) == {"optimizer.lr": expected.optimizer.lr, "optimizer.rho": expected.optimizer.rho}
    assert (cfg.tuning.phase, cfg.seed, cfg.optimizer.lr) == ("reseed", 43, expected.optimizer.lr)
    other = make_config(tmp_path / "gsam", "sweep=crowded_valley_reseed", "optimizer=gsam", f"tuning.from={tuning}")
    with pytest.raises(Exception, match="holds no completed tuning trial of gsam on digits/SmallCNN"):
        apply_trial(other)


def logged_steps(run_dir: Path) -> int:
    path = run_dir / rundir.METRICS
    return path.read_text().count('"event": "step"') if path.is_file() else 0


@pytest.mark.slow
def test_a_sweep_interrupted_and_continued_selects_what_a_straight_sweep_selects(tmp_path: Path):
    """SIGTERM in the second trial; the command the sweep prints continues it (the first trial is kept,
    the second resumes from its checkpoint); the AlgoPerf selection equals the uninterrupted sweep's."""
    arguments = (*TWO_TRIALS[:-3], "trainer.epochs=3", "trainer.checkpoint_every_n_steps=2",
                 "trainer.log_every_n_steps=1", "trainer.progress_bar=false")
    run_cli(*arguments, log_dir=tmp_path / "straight")
    process = start_cli(*arguments, log_dir=tmp_path / "stopped")
    deadline = time.monotonic() + 300
    while not (sweep_dir_ready := list((tmp_path / "stopped").glob("multiruns/*/1"))) or \
            logged_steps(sweep_dir_ready[0]) < 5:
        assert process.poll() is None and time.monotonic() < deadline, "the sweep ended before its second trial"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0
    command = re.search(r"continue the sweep with: (.+)", stderr).group(1)
    assert rundir.status(sweep_dir_ready[0].parent / "1") == rundir.INTERRUPTED
    continued = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=ROOT, capture_output=True,
                               text=True, timeout=600)
    assert continued.returncode == 0, continued.stderr[-3000:]
    straight, stopped = (read_trials([sweep_dir(tmp_path / name)]) for name in ("straight", "stopped"))
    target = min(max(record["val/accuracy"] for record in trial.run.epoch_records()) for trial in straight)
    for unit in ("epochs", "steps", "passes"):
        expected = algoperf_scores(straight, "val/accuracy", target, unit=unit)
        actual = algoperf_scores(stopped, "val/accuracy", target, unit=unit)
        assert [(key, value.studies, value.score, [p.name if p else None for p in value.best.values()])
                for key, value in actual.items()] == \
               [(key, value.studies, value.score, [p.name if p else None for p in value.best.values()])
                for key, value in expected.items()]
        assert all(math.isfinite(value.score) for value in actual.values())
