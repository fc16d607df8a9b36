"""Hyperparameter schedules: one mechanism for NSO's sigma and rho ∝ lr, per optimizer step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from flatmin.errors import ConfigError
from flatmin.optim import NSO, SAM, HyperparameterSchedule, build_hyper_schedule
from tests.optim.common import mlp


def values(schedule: HyperparameterSchedule, key: str, steps: int) -> list[float]:
    seen = [schedule.optimizer.param_groups[0][key]]
    for _ in range(steps - 1):
        schedule.step()
        seen.append(schedule.optimizer.param_groups[0][key])
    return seen


def nso(sigma: float = 0.01) -> NSO:
    return NSO(mlp().parameters(), torch.optim.SGD, sigma=sigma, lr=0.1)


def test_constant_linear_and_exp_go_from_their_start_to_the_configured_value():
    assert values(HyperparameterSchedule(nso(), {"sigma": "constant"}, 5), "sigma", 5) == [0.01] * 5
    assert values(HyperparameterSchedule(nso(), {"sigma": "linear"}, 5), "sigma", 5) == pytest.approx(
        [0.0, 0.0025, 0.005, 0.0075, 0.01])
    assert values(HyperparameterSchedule(nso(), {"sigma": "exp"}, 5), "sigma", 5) == pytest.approx(
        [1e-5 * 1000 ** (i / 4) for i in range(5)])


def test_an_epoch_interval_moves_once_per_epoch_as_the_nso_release_s_linspace():
    """NSO's release sets sigma to ``np.linspace(0, sigma, epochs)[epoch]`` at each epoch's start."""
    epochs, steps_per_epoch = 4, 3
    cfg = OmegaConf.create({"name": "nso", "method": "nso", "sigma": 0.3, "schedules": {"sigma": "linear"},
                            "schedule_interval": "epoch"})
    schedule = build_hyper_schedule(cfg, nso(sigma=0.3), epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch)
    expected = np.repeat(np.linspace(0, 0.3, epochs), steps_per_epoch)
    assert values(schedule, "sigma", epochs * steps_per_epoch) == pytest.approx(expected.tolist(), abs=1e-15)
    cfg.schedule_interval = "step"
    schedule = build_hyper_schedule(cfg, nso(sigma=0.3), epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch)
    assert values(schedule, "sigma", epochs * steps_per_epoch) == pytest.approx(
        np.linspace(0, 0.3, epochs * steps_per_epoch).tolist())


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")   # no optimizer step here
def test_proportional_to_lr_follows_each_groups_learning_rate():
    model = mlp()
    optimizer = SAM([{"params": [model[0].weight], "lr": 0.1}, {"params": [model[0].bias], "lr": 0.2}],
                    torch.optim.SGD, rho=0.05)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    schedule = HyperparameterSchedule(optimizer, {"rho": "proportional_to_lr"}, total_steps=4)
    for step in range(4):
        for group in optimizer.param_groups:
            assert group["rho"] == pytest.approx(0.05 / (step + 1))
        lr_schedule.step()
        schedule.step()


def test_the_schedule_reaches_the_step_itself():
    """The scheduled value is the one the next step uses: sigma 0 at step 0 is no noise at all."""
    optimizer = nso(sigma=0.5)
    HyperparameterSchedule(optimizer, {"sigma": "linear"}, total_steps=10)
    model_params = [p for g in optimizer.param_groups for p in g["params"]]
    seen = []

    def closure():
        seen.append([p.detach().clone() for p in model_params])
        optimizer.zero_grad()
        loss = sum((p ** 2).sum() for p in model_params)
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model_params]
    optimizer.step(closure)
    assert all(torch.equal(a, b) for a, b in zip(seen[0], before))


def test_resuming_restores_the_step_count_and_the_values():
    schedule = HyperparameterSchedule(nso(), {"sigma": "linear"}, 5)
    values(schedule, "sigma", 3)
    resumed = HyperparameterSchedule(nso(), {"sigma": "linear"}, 5)
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.optimizer.param_groups[0]["sigma"] == pytest.approx(0.005)
    assert values(resumed, "sigma", 3) == values(schedule, "sigma", 3)


def optimizer_cfg(**overrides):
    return OmegaConf.create({"name": "nso", "method": "nso", "sigma": 0.01, "num_perturbs": 1, "two_sided": True, "lam": 0.0,
                             "distribution": "normal", **overrides})


@pytest.mark.parametrize(("schedules", "message"), [
    ({"lr": "linear"}, "optimizer.schedules.lr is not a hyperparameter of optimizer 'nso' that can be scheduled "
                       "(those are: sigma, lam)."),
    ({"num_perturbs": "linear"}, "optimizer.schedules.num_perturbs is not a hyperparameter"),
    ({"momentum": "exp"}, "optimizer.schedules.momentum is not a hyperparameter"),
])
def test_only_a_methods_own_numeric_hyperparameters_can_be_scheduled(schedules, message):
    with pytest.raises(ConfigError) as caught:
        build_hyper_schedule(optimizer_cfg(schedules=schedules), nso(), 10)
    assert str(caught.value).startswith(message)


def test_exp_needs_a_positive_target():
    with pytest.raises(ConfigError, match=r"optimizer.schedules.sigma is exp, which needs optimizer.sigma > 0"):
        build_hyper_schedule(optimizer_cfg(sigma=0.0, schedules={"sigma": "exp"}), nso(sigma=0.0), 10)


def test_no_schedules_changes_nothing():
    optimizer = nso()
    schedule = build_hyper_schedule(optimizer_cfg(), optimizer, 10)
    schedule.step()
    assert optimizer.param_groups[0]["sigma"] == 0.01
