"""A tuning sweep's job (``flatmin.tuning.apply_trial``): its point and seed as the protocol assigns them,
recorded in the config; its bad ``tuning`` values refused in one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from flatmin.errors import ConfigError
from flatmin.tuning import apply_trial, draw_trials, search_space
from flatmin.train.run import run
from tests.conftest import CONF, make_config


def test_a_config_without_a_sweep_option_is_no_trial(tmp_path: Path):
    cfg = make_config(tmp_path, "optimizer=sam")
    before = OmegaConf.to_container(cfg)
    assert apply_trial(cfg) is None
    assert OmegaConf.to_container(cfg) == before


@pytest.mark.parametrize(("study", "trial"), [(0, 0), (1, 3), (2, 4)])
def test_an_algoperf_job_takes_its_studys_draw_and_the_studys_seed(tmp_path: Path, study: int, trial: int):
    """Job (j, i) takes draw_trials(space, N, S, tuning.seed)[j][i] and seed + j (AlgoPerf's runner
    gives a study one seed); the point and the effective space are recorded nested like the config."""
    overrides = ("optimizer=sam", "sweep=algoperf", "seed=7", "tuning.seed=3",
                 f"tuning.study={study}", f"tuning.trial={trial}")
    cfg = make_config(tmp_path, *overrides)
    space = search_space(cfg)
    expected = draw_trials(space, 5, 3, seed=3)[study][trial]
    assert apply_trial(cfg) == expected
    assert list(expected) == ["optimizer.lr", "optimizer.rho"]
    assert (cfg.optimizer.lr, cfg.optimizer.rho) == (expected["optimizer.lr"], expected["optimizer.rho"])
    assert cfg.seed == 7 + study
    assert OmegaConf.to_container(cfg.tuning.point) == {"optimizer": {"lr": expected["optimizer.lr"],
                                                                      "rho": expected["optimizer.rho"]}}
    assert OmegaConf.to_container(cfg.tuning.space) == {"optimizer": {"lr": space["optimizer.lr"],
                                                                      "rho": space["optimizer.rho"]}}
    again = make_config(tmp_path, *overrides)        # a resumed job recomputes the same point and seed
    assert apply_trial(again) == expected and again.seed == cfg.seed


def test_a_crowded_valley_tuning_job_draws_one_study_at_the_base_seed(tmp_path: Path):
    cfg = make_config(tmp_path, "optimizer=gsam", "sweep=crowded_valley", "seed=42", "tuning.trial=17",
                      "+tuning.space.optimizer.momentum={min:0.8,max:0.99,scaling:linear}")
    space = search_space(cfg)
    assert list(space) == ["optimizer.lr", "optimizer.rho", "optimizer.momentum"]
    expected = draw_trials(space, 25, 1, seed=0)[0][17]
    assert apply_trial(cfg) == expected
    assert cfg.optimizer.momentum == expected["optimizer.momentum"] and cfg.seed == 42
    assert cfg.tuning.phase == "tune"


def test_a_one_shot_job_keeps_the_defaults_at_seed_plus_k(tmp_path: Path):
    """Without tuning.from the reseed sweep is Crowded Valley's one-shot phase: k = 0 … R-1."""
    cfg = make_config(tmp_path, "optimizer=sam", "sweep=crowded_valley_reseed", "seed=42", "tuning.reseed=3")
    lr, rho = cfg.optimizer.lr, cfg.optimizer.rho
    assert cfg.tuning.phase == "oneshot"
    assert apply_trial(cfg) == {}
    assert (cfg.optimizer.lr, cfg.optimizer.rho, cfg.seed) == (lr, rho, 45)
    assert OmegaConf.to_container(cfg.tuning.point) == {}


def test_the_reseed_sweep_counts_from_one_after_a_tuning_sweep_and_from_zero_without(tmp_path: Path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        oneshot = compose("config", overrides=["sweep=crowded_valley_reseed"], return_hydra_config=True)
        reseed = compose("config", overrides=["sweep=crowded_valley_reseed", f"tuning.from={tmp_path}",
                                              "tuning.reseeds=3"], return_hydra_config=True)
    assert oneshot.hydra.sweeper.params["tuning.reseed"] == "range(0,10)"
    assert (reseed.hydra.sweeper.params["tuning.reseed"], reseed.tuning.phase) == ("range(1,4)", "reseed")


@pytest.mark.parametrize(("overrides", "message"), [
    (["tuning.trials=0"], "tuning.trials must be a positive integer (got 0)."),
    (["tuning.studies=1.5"], "tuning.studies must be a positive integer (got 1.5)."),
    (["tuning.reseeds=-2"], "tuning.reseeds must be a positive integer (got -2)."),
    (["tuning.study=3"], "tuning.study must be below tuning.studies=3 (got 3)"),
    (["tuning.trial=5"], "tuning.trial must be below tuning.trials=5 (got 5)"),
    (["tuning.trial=null"], "tuning.trial must be set in the tuning phase"),
    (["tuning.from=/no/such/sweep"], "tuning.from must be null or the directory of a tuning sweep"),
    (["+tuning.space.optimizer.nesterov_typo={min:0.1,max:1}"], "tuning.space.optimizer.nesterov_typo names no key"),
    (["+tuning.space.optimizer.lr={min:1,max:0.1}"], "tuning.space.optimizer.lr must be min < max"),
    (["+tuning.space.optimizer.momentum={around:10}", "optimizer.momentum=0"], "optimizer.momentum"),
    (["+tuning.space.optimizer.lr=null", "+tuning.space.optimizer.rho=null"], "the search space is empty"),
    (["+tuning.point.optimizer.lr=0.1"], "tuning.point is recorded by the run"),
])
def test_bad_tuning_values_are_one_sentence(tmp_path: Path, overrides: list[str], message: str):
    cfg = make_config(tmp_path, "optimizer=sam", "sweep=algoperf", *overrides)
    with pytest.raises(ConfigError) as error:
        apply_trial(cfg)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_the_run_refuses_a_bad_trial_before_any_work(tmp_path: Path):
    with pytest.raises(ConfigError, match="tuning.trial must be below"):
        run(make_config(tmp_path / "run", "sweep=algoperf", "tuning.trial=9"))
    assert not (tmp_path / "run" / "config.yaml").exists()
