"""Sweeps: a failing job does not stop the others; submitit and Optuna run for real."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from flatmin import rundir
from flatmin.train.sweep import print_sweep_outcomes
from tests.conftest import CONF, run_cli


def job_dirs(log_dir: Path) -> list[Path]:
    (sweep,) = (log_dir / "multiruns").iterdir()
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def status(job: Path) -> str:
    return json.loads((job / "summary.json").read_text())["status"]


def test_a_failing_job_does_not_stop_the_sweep_and_is_listed(tmp_path: Path):
    result = run_cli("-m", "optimizer.lr=0.1,-1,0.05", "trainer.epochs=1", log_dir=tmp_path, check=False)
    assert result.returncode != 0
    jobs = job_dirs(tmp_path)
    assert [status(job) for job in jobs] == ["completed", "failed", "completed"]
    assert "2 of 3 jobs completed" in result.stderr
    assert "#1 FAILED      optimizer.lr=-1 trainer.epochs=1" in result.stderr
    assert "ConfigError: optimizer.lr must be a number > 0 (got -1)." in result.stderr
    assert "continue the sweep" not in result.stderr       # a failed job is not continued: it is fixed


def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path: Path):
    run_cli("-m", "hydra/launcher=submitit_local", "optimizer=sgd,sam", "trainer.epochs=1", log_dir=tmp_path)
    jobs = job_dirs(tmp_path)
    assert [status(job) for job in jobs] == ["completed", "completed"]
    assert {json.loads((job / "summary.json").read_text())["choices"]["optimizer"] for job in jobs} == {"sgd", "sam"}


def test_optuna_sweep_runs_three_trials_into_an_sqlite_study(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    run_cli("-m", "sweep=optuna", "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={storage}",
            "trainer.epochs=2", log_dir=tmp_path)
    jobs = job_dirs(tmp_path)
    assert len(jobs) == 3 and all(status(job) == "completed" for job in jobs)
    study = optuna.load_study(study_name="flatmin-sgd-digits", storage=storage)
    assert len(study.trials) == 3
    best_val = max(json.loads((job / "summary.json").read_text())["best_val"]["val/accuracy"] for job in jobs)
    assert study.best_value == best_val                  # the objective is the best validation accuracy
    results = OmegaConf.load(jobs[0].parent / "optimization_results.yaml")
    assert results.best_value == best_val


def test_the_slurm_launcher_config_asks_one_task_per_gpu():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.gpus_per_node == 4 and launcher.tasks_per_node == 4


def test_the_closing_list_names_unlaunched_jobs_and_stays_silent_when_hydra_refused_the_sweep(tmp_path: Path,
                                                                                               capsys):
    planned = [["optimizer=sgd"], ["optimizer=sam"]]
    print_sweep_outcomes(tmp_path, planned, ["optimizer=sgd,sam"])
    assert capsys.readouterr().err == ""                  # no job ran: Hydra's own error said why
    (tmp_path / "0").mkdir()
    rundir.write_json({rundir.STATUS: rundir.COMPLETED}, tmp_path / "0" / rundir.SUMMARY)
    print_sweep_outcomes(tmp_path, planned, ["optimizer=sgd,sam"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"flatmin sweep {tmp_path}: 1 of 2 jobs completed (1 not launched)",
                     "  #0 completed   ", "  #1 not launched  optimizer=sam",
                     f"continue the sweep with: python -m flatmin.train -m optimizer=sgd,sam hydra.sweep.dir={tmp_path} "
                     "trainer.resume=auto"]
