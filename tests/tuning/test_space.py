"""Search spaces (``flatmin.tuning.space``): declared once per hyperparameter (the base optimizer's
learning rate, each method's radius), in AlgoPerf's forms, changed by ``tuning.space``; bad entries
are one sentence naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from flatmin.errors import ConfigError
from flatmin.optim.hyper import Search
from flatmin.optim.multipass import METHODS
from flatmin.optim.registry import option_config, option_names
from flatmin.tuning.space import search_space
from tests.conftest import make_config


def tenfold(value: float) -> dict:
    return {"min": value / 10, "max": value * 10, "scaling": "log"}


@pytest.mark.parametrize("option", option_names())
def test_every_option_searches_its_learning_rate_and_the_radii_it_schedules(option: str):
    """The declarations agree with the options: a method declares a search on exactly the
    hyperparameters its options schedule (rho, rho_p, sigma)."""
    cfg = option_config(option)
    method = METHODS.get(cfg.get("method"))
    searched = [key for key, hyper in (method.hyperparameters if method else {}).items() if hyper.search]
    assert searched == list(cfg.get("schedules") or {}), option
    space = search_space(OmegaConf.create({"optimizer": cfg}))
    assert list(space) == ["optimizer.lr", *(f"optimizer.{key}" for key in searched)]
    assert space["optimizer.lr"] == tenfold(cfg.lr)


def test_gam_searches_both_radii_in_declaration_order(tmp_path: Path):
    space = search_space(make_config(tmp_path, "optimizer=gam"))
    cfg = option_config("gam")
    assert space == {"optimizer.lr": tenfold(cfg.lr), "optimizer.rho": tenfold(cfg.rho),
                     "optimizer.rho_p": tenfold(cfg.rho_p)}


def test_tuning_space_adds_replaces_in_place_and_removes(tmp_path: Path):
    cfg = make_config(tmp_path, "optimizer=gam", "+tuning.space.optimizer.momentum={min:0.8,max:0.99,scaling:linear}",
                      "+tuning.space.optimizer.rho={feasible_points:[0.1,0.2]}", "+tuning.space.optimizer.rho_p=null",
                      "+tuning.space.dataset.batch_size={feasible_points:[64,128]}")
    space = search_space(cfg)
    assert list(space) == ["optimizer.lr", "optimizer.rho", "optimizer.momentum", "dataset.batch_size"]
    assert space["optimizer.rho"] == {"feasible_points": [0.1, 0.2]}
    assert space["optimizer.momentum"] == {"min": 0.8, "max": 0.99, "scaling": "linear"}


@pytest.mark.parametrize(("overrides", "message"), [
    (["+tuning.space.optimizer.lr={min:1,max:0.1}"], r"tuning.space.optimizer.lr must be min < max"),
    (["+tuning.space.optimizer.lr={min:0,max:1}"], r"tuning.space.optimizer.lr must be min > 0 on a log scale"),
    (["+tuning.space.optimizer.lr={min:0.1,max:1,scaling:cubic}"], "must be scaling log or linear"),
    (["+tuning.space.optimizer.lr={feasible_points:[]}"], "must be a non-empty list of feasible_points"),
    (["+tuning.space.optimizer.lr={around:1}"], "must be around > 1"),
    (["+tuning.space.optimizer.lr={min:0.1,max:1,around:3}"], "exactly one of min/max, feasible_points or around"),
    (["+tuning.space.optimizer.lr=0.1"], r"must be a range: \{min, max, scaling\}"),
    (["+tuning.space.optimizer.lrr={min:0.1,max:1}"], "tuning.space.optimizer.lrr names no key of the config"),
    (["optimizer.lr=0", "+tuning.space.optimizer.rho=null"], "optimizer.lr: a range around the configured value "
                                                             r"needs a value > 0 \(got 0\)"),
    (["+tuning.space.optimizer.lr=null"], "the search space is empty"),
])
def test_a_bad_space_is_one_sentence_naming_the_key(tmp_path: Path, overrides: list[str], message: str):
    with pytest.raises(ConfigError, match=message):
        search_space(make_config(tmp_path, *overrides))


def test_a_search_has_exactly_one_valid_form():
    assert Search(around=10).form(0.05) == tenfold(0.05)
    assert Search(min=1e-4, max=1e-1).form(None) == {"min": 1e-4, "max": 1e-1, "scaling": "log"}
    assert Search(feasible_points=(1, 2)).form(None) == {"feasible_points": [1, 2]}
    assert Search().problem() == "exactly one of min/max, feasible_points or around"
