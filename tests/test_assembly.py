"""One place assembles a run (``flatmin/assembly.py``): every part built once, the loop's settings
typed and resolved once, and the checks before it build nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from flatmin.assembly import Parts, TrainerSettings, assemble
from flatmin.optim import build_optimizer
from flatmin.optim.registry import options
from flatmin.runtime import Runtime
from flatmin.train import run
from flatmin.validation import validate
from tests.conftest import make_config
from tests.optim.common import mlp


@pytest.fixture
def optimizer_inits(monkeypatch) -> list[str]:
    """The class of every optimizer constructed (``torch.optim.Optimizer.__init__`` calls) from now on."""
    calls: list[str] = []
    real = torch.optim.Optimizer.__init__

    def counted(self, *args, **kwargs):
        calls.append(type(self).__name__)
        real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", counted)
    return calls


def test_a_one_epoch_sgd_run_constructs_exactly_one_optimizer(tmp_path: Path, optimizer_inits: list[str]):
    summary = run(make_config(tmp_path, "trainer.epochs=1", "trainer.limit_train_batches=2"))
    assert summary["status"] == "completed"
    assert optimizer_inits == ["SGD"]


def test_a_pass_budget_is_settled_on_the_optimizer_the_run_trains_with(tmp_path: Path, optimizer_inits: list[str]):
    cfg = make_config(tmp_path, "optimizer=sam", "trainer.budget_passes=4", "trainer.limit_train_batches=2")
    summary = run(cfg)
    assert summary["epochs"] == 2                                 # 4 passes at SAM's 2 a step
    assert optimizer_inits == ["SGD", "SAM"]                      # the base and the method over it, once
    assert OmegaConf.load(tmp_path / "config.yaml").trainer.epochs == 2


@pytest.mark.parametrize("option", sorted(options()))
def test_validation_builds_no_optimizer(tmp_path: Path, optimizer_inits: list[str], option: str):
    validate(make_config(tmp_path, f"optimizer={option}"))
    assert optimizer_inits == []


def test_the_parts_are_built_once_and_the_settings_are_plain_values(tmp_path: Path):
    cfg = make_config(tmp_path, "optimizer=sam", "trainer.accumulate_grad_batches=2", "trainer.limit_train_batches=5")
    parts = assemble(cfg, Runtime.local("cpu"))
    assert isinstance(parts, Parts)
    assert parts.optimizer is parts.stepper.optimizer and parts.model is parts.stepper.model
    assert {id(p) for group in parts.optimizer.param_groups for p in group["params"]} == \
        {id(p) for p in parts.module.parameters()}
    assert parts.lr_schedule.optimizer is parts.optimizer
    assert parts.stepper.accumulate == 2 and parts.settings.steps_per_epoch(len(parts.loaders.train)) == 3
    values = dataclasses.asdict(parts.settings)
    assert not [key for key, value in values.items() if isinstance(value, (DictConfig, ListConfig))]
    assert values.keys() == {field.name for field in dataclasses.fields(TrainerSettings)}
    assert parts.settings.monitor_mode == "max"                  # auto, for val/accuracy
    assert parts.config == {**OmegaConf.to_container(cfg, resolve=True)}


def test_a_seeded_assembly_draws_the_same_initial_weights(tmp_path: Path):
    cfg = make_config(tmp_path)
    weights = []
    for _ in range(2):
        torch.manual_seed(cfg.seed)
        weights.append(assemble(cfg, Runtime.local("cpu")).module.state_dict())
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_a_stepper_steps_in_the_runtimes_precision(tmp_path: Path):
    parts = assemble(make_config(tmp_path, "optimizer=sam"), Runtime.local("cpu", "bf16"))
    assert parts.stepper.precision.name == "bf16" and not parts.stepper.scaler.enabled
    x, y = next(iter(parts.loaders.train))
    loss, outputs, ended = parts.stepper.step(x, y)
    assert ended and outputs.dtype == torch.bfloat16 and torch.isfinite(loss)
    fp16 = assemble(make_config(tmp_path, "optimizer=sam"), Runtime.local("cpu", "fp16")).stepper
    assert fp16.scaler.enabled and fp16.scaler is not parts.stepper.scaler


def test_the_library_builds_an_optimizer_without_a_run(tmp_path: Path, optimizer_inits: list[str]):
    build_optimizer(make_config(tmp_path, "optimizer=gam").optimizer, mlp())
    assert optimizer_inits == ["SGD", "GAM"]
