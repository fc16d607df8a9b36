"""LR schedules: per optimizer step, linear warmup, lengths in epochs."""

import math

import pytest
from omegaconf import OmegaConf

from flatmin.train.schedulers import lr_factor


def factor(name: str, **kwargs):
    cfg = OmegaConf.create({"name": name, "warmup_epochs": 0, "min_lr_factor": 0.0, "step_size": 10,
                            "gamma": 0.1, **kwargs})
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
