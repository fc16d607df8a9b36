"""LR schedules: per optimizer step, linear warmup, lengths in epochs."""

import math

import pytest
from omegaconf import OmegaConf

from flatmin.optim.lr_schedule import lr_factor


def factor(name: str, **kwargs):
    cfg = OmegaConf.create({"name": name, "warmup_epochs": 0, "min_lr_factor": 0.0, "step_size": 10,
                            "gamma": 0.1, "interval": "step", **kwargs})
    return lr_factor(cfg, steps_per_epoch=10, epochs=30)


def test_warmup_is_linear_then_cosine_reaches_the_floor():
    f = factor("cosine", warmup_epochs=1, min_lr_factor=0.1)
    assert [f(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(10 + 145) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(300) == pytest.approx(0.1)


def test_step_decays_by_gamma_every_step_size_epochs():
    f = factor("step")
    assert [f(0), f(99), f(100), f(199), f(200)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_constant_after_warmup():
    f = factor("constant", warmup_epochs=0.5)
    assert [f(0), f(4), f(5), f(250)] == pytest.approx([0.2, 1.0, 1.0, 1.0])


def test_an_epoch_interval_holds_each_epochs_first_value():
    per_step, per_epoch = factor("cosine"), factor("cosine", interval="epoch")
    for epoch in range(30):
        assert [per_epoch(10 * epoch + i) for i in range(10)] == [per_step(10 * epoch)] * 10
    # GAM's release: CosineAnnealingLR(T_max=epochs) stepped once per epoch
    assert per_epoch(10 * 7 + 3) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 30)))


def test_milestones_are_fractions_of_the_run_like_davda54s_step_lr():
    f = factor("step", milestones=[0.3, 0.6, 0.8], gamma=0.2, interval="epoch")

    def released(epoch: int) -> float:          # davda54/sam example/utility/step_lr.py, 30 epochs
        return 1.0 if epoch < 9 else 0.2 if epoch < 18 else 0.2 ** 2 if epoch < 24 else 0.2 ** 3

    assert [f(10 * epoch + 5) for epoch in range(30)] == pytest.approx([released(epoch) for epoch in range(30)])


def test_linear_decays_to_the_floor_like_transformers_linear_schedule():
    f = factor("linear")
    assert [f(0), f(150), f(299), f(300)] == pytest.approx([1.0, 0.5, 1 / 300, 0.0])
