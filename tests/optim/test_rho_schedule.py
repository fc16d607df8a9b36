"""GSAM's rho schedule in the shared mechanism (docs/optimizers.md, "Schedules"; flatmin/optim/hyper_schedule.py):
``schedules.rho: proportional_to_lr`` with ``optimizer.rho_min`` writes
``rho_t = rho_min + (rho − rho_min)·(lr_t − lr_min)/(lr_max − lr_min)`` every step, as the PyTorch
release's ProportionScheduler (juntang-zhuang/GSAM@a770275 gsam/scheduler.py) and big_vision's
gsam_gradient compute it; ``rho_t = rho`` when ``lr_max == lr_min``."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from flatmin.validation import validate
from flatmin.errors import ConfigError
from flatmin.optim import GSAM, SAM, HyperparameterSchedule, build_hyper_schedule
from flatmin.optim import build as build_module
from flatmin.train import run
from flatmin.optim.lr_schedule import final_lr_factor, lr_factor
from tests.conftest import make_config
from tests.optim.common import mlp


def release_proportion(lr: float, max_lr: float, min_lr: float, max_value: float, min_value: float) -> float:
    """ProportionScheduler.step, written out."""
    if max_lr > min_lr:
        return min_value + (max_value - min_value) * (lr - min_lr) / (max_lr - min_lr)
    return max_value


def two_group_gsam(rho: float = 0.6) -> GSAM:
    model = mlp()
    return GSAM([{"params": [model[0].weight], "lr": 0.1}, {"params": [model[0].bias, *model[2].parameters()],
                                                           "lr": 0.3}], torch.optim.SGD, rho=rho)


def scheduler_cfg(**kwargs):
    return OmegaConf.create({"name": "cosine", "warmup_epochs": 0, "min_lr_factor": 0.0, "step_size": 1,
                             "gamma": 0.1, "interval": "step", **kwargs})


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")   # no optimizer step here
@pytest.mark.parametrize("warmup_epochs", [0, 0.5])
def test_rho_follows_the_learning_rate_from_rho_to_rho_min(warmup_epochs: float):
    """Each group's own LR; cosine to min_lr_factor·lr_max (with and without warmup); at the LR
    schedule's end rho reaches rho_min."""
    optimizer = two_group_gsam(rho=0.6)
    cfg = scheduler_cfg(min_lr_factor=0.01, warmup_epochs=warmup_epochs)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch=4, epochs=3))
    final = final_lr_factor(cfg, steps_per_epoch=4, epochs=3)
    assert final == 0.01
    schedule = HyperparameterSchedule(optimizer, {"rho": "proportional_to_lr"}, 12, floors={"rho": 0.1},
                                      final_lr_factor=final)
    for _ in range(12):
        for group, lr_max in zip(optimizer.param_groups, (0.1, 0.3)):
            assert group["rho"] == pytest.approx(release_proportion(group["lr"], lr_max, 0.01 * lr_max, 0.6, 0.1),
                                                 rel=1e-14)
        lr_schedule.step()
        schedule.step()
    for group in optimizer.param_groups:
        assert group["rho"] == pytest.approx(0.1, rel=1e-12)              # lr is lr_min after the last step


def test_a_constant_learning_rate_keeps_rho():
    """lr_max == lr_min (a constant LR schedule ends where it starts): rho_t = rho."""
    optimizer = two_group_gsam(rho=0.6)
    final = final_lr_factor(scheduler_cfg(name="constant"), steps_per_epoch=4, epochs=3)
    assert final == 1.0
    schedule = HyperparameterSchedule(optimizer, {"rho": "proportional_to_lr"}, 12, floors={"rho": 0.1},
                                      final_lr_factor=final)
    schedule.step()
    assert [group["rho"] for group in optimizer.param_groups] == [0.6, 0.6]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_with_rho_min_and_lr_min_zero_it_is_value_times_lr_ratio_bit_for_bit():
    optimizer = two_group_gsam(rho=0.05)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(scheduler_cfg(), 7, 1))
    schedule = HyperparameterSchedule(optimizer, {"rho": "proportional_to_lr"}, 7)
    for _ in range(7):
        for group, lr_0 in zip(optimizer.param_groups, (0.1, 0.3)):
            assert group["rho"] == 0.05 * (group["lr"] / lr_0)
        lr_schedule.step()
        schedule.step()


def test_the_cosine_schedule_ends_exactly_at_its_floor():
    for min_lr_factor in (0.0, 0.01, 0.1):
        for warmup_epochs in (0, 1):
            cfg = scheduler_cfg(min_lr_factor=min_lr_factor, warmup_epochs=warmup_epochs)
            assert final_lr_factor(cfg, steps_per_epoch=10, epochs=30) == min_lr_factor
    assert final_lr_factor(scheduler_cfg(name="step", step_size=10), 10, 30) == pytest.approx(0.1 ** 3)
    assert 0.1 < lr_factor(scheduler_cfg(min_lr_factor=0.1), 10, 30)(299) < 0.1001      # the last step's LR: just above


# -- the config: optimizer.rho_min ----------------------------------------------------------------
def gsam_cfg(**overrides):
    return OmegaConf.create({"name": "gsam", "method": "gsam", "base": "sgd", "rho": 0.6, "rho_min": 0.0,
                             "schedules": {"rho": "proportional_to_lr"}, **overrides})


def test_build_hyper_schedule_takes_rho_min_and_the_final_learning_rate():
    optimizer = two_group_gsam(rho=0.6)
    schedule = build_hyper_schedule(gsam_cfg(rho_min=0.1), optimizer, 10, final_lr_factor=0.5)
    assert schedule.floors == {"rho": 0.1} and schedule.final_lr_factor == 0.5
    for group in optimizer.param_groups:
        group["lr"] *= 0.75                                                 # halfway from lr_max to lr_min
    schedule.step()
    assert [group["rho"] for group in optimizer.param_groups] == pytest.approx([0.35, 0.35], rel=1e-14)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"rho_min": -0.1}, "optimizer.rho_min must be a number >= 0 (got -0.1)."),
    ({"rho_min": 0.7}, "optimizer.rho_min (0.7) must not exceed optimizer.rho (0.6)"),
    ({"rho_min": 0.1, "schedules": {"rho": "constant"}}, "optimizer.rho_min (0.1) is where optimizer.schedules.rho="
                                                         "proportional_to_lr ends, and optimizer 'gsam' does not "
                                                         "schedule rho so (schedules.rho: constant)"),
])
def test_a_rho_min_out_of_range_or_without_effect_is_refused(overrides, message):
    with pytest.raises(ConfigError) as caught:
        build_hyper_schedule(gsam_cfg(**overrides), two_group_gsam(), 10)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("option", ["sam", "gam", "sgd_tracer", "gsam", "wsam"])
def test_every_method_with_a_rho_accepts_rho_min_under_the_schedule(tmp_path, option: str):
    validate(make_config(tmp_path, f"optimizer={option}", "optimizer.schedules.rho=proportional_to_lr",
                         "optimizer.rho_min=0.01"))


@pytest.mark.parametrize("overrides", [("optimizer=sam", "optimizer.rho_min=0.01"),
                                       ("optimizer=sgd", "optimizer.rho_min=0.01"),
                                       ("optimizer=nso", "optimizer.rho_min=0.01")])
def test_config_validation_refuses_a_rho_min_that_would_do_nothing(tmp_path, overrides):
    with pytest.raises(ConfigError, match=r"optimizer.rho_min \(0.01\) is where optimizer.schedules.rho"):
        validate(make_config(tmp_path, *overrides))


def test_the_trainer_tells_the_schedule_where_the_learning_rate_ends(tmp_path, monkeypatch):
    torch.set_default_dtype(torch.float32)                  # a real run (the fixture restores float64)
    built = []

    class Recording(HyperparameterSchedule):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(build_module, "HyperparameterSchedule", Recording)
    cfg = make_config(tmp_path, "optimizer=gsam", "optimizer.rho=0.5", "optimizer.schedules.rho=proportional_to_lr",
                      "optimizer.rho_min=0.1", "scheduler.min_lr_factor=0.2", "trainer.epochs=1",
                      "trainer.limit_train_batches=3")
    run(cfg)
    (schedule,) = built
    assert schedule.final_lr_factor == 0.2 and schedule.floors == {"rho": 0.1}


def test_sam_with_rho_min_zero_is_unchanged(tmp_path):
    """The shared key's default changes nothing for an existing option."""
    cfg = make_config(tmp_path, "optimizer=sam", "optimizer.schedules.rho=proportional_to_lr").optimizer
    optimizer = SAM(mlp().parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    schedule = build_hyper_schedule(cfg, optimizer, 10, final_lr_factor=0.0)
    assert cfg.rho_min == 0.0 and schedule.floors == {}
