"""The README's Python blocks run: each is marked ``<!-- runnable: NAME -->`` and runs here with
NAME's checks (the optimizer contract, an own training loop, and the Lightning, transformers Trainer
and Accelerate adapters, each with the real host library on the CPU)."""

from __future__ import annotations

import math

import torch

from tests.test_readme import RUNNABLE, blocks


def runnable(name: str) -> str:
    (body,) = [body for language, body, before in blocks() if language == "python"
               and (found := RUNNABLE.search(before)) and found["name"] == name]
    return body


def run(name: str) -> dict:
    namespace: dict = {"__name__": "readme"}
    exec(compile(runnable(name), "README.md", "exec"), namespace)
    return namespace


def test_every_python_block_is_marked_runnable():
    names = [RUNNABLE.search(before) for language, _, before in blocks() if language == "python"]
    assert all(names) and {m["name"] for m in names} == {"the contract", "the own training loop", "the lightning module",
                                                         "the transformers trainer", "the accelerate loop"}


def test_the_contract_block_steps_sam():
    torch.manual_seed(0)
    namespace = run("the contract")
    assert torch.isfinite(namespace["loss"]) and namespace["opt"].base_optimizer.state   # SGD's momentum: a step


def test_the_own_training_loop_trains_with_esam_and_evaluates_the_slow_weights(capsys):
    assert run("the own training loop")["accuracy"] >= 0.9
    assert "training accuracy of the slow weights" in capsys.readouterr().out


def test_the_lightning_module_trains_sam_through_the_mixin(capsys):
    namespace = run("the lightning module")
    trainer = namespace["trainer"]
    assert namespace["accuracy"] >= 0.9
    assert trainer.global_step == 5 * math.ceil(len(trainer.train_dataloader) / 2)    # optimizer steps
    assert trainer.lightning_module.flatmin_stepper.passes == 2 * 5 * len(trainer.train_dataloader)


def test_the_transformers_trainer_trains_sam_through_flatmin_trainer(capsys):
    namespace = run("the transformers trainer")
    trainer = namespace["trainer"]
    assert trainer.evaluate()["eval_loss"] < 0.5                      # chance is ln 2
    assert trainer.state.global_step == 3 * 384 // (32 * 2)             # optimizer steps
    assert trainer.stepper.passes == 2 * 3 * 384 // 32


def test_the_accelerate_loop_trains_esam_through_the_stepper():
    namespace = run("the accelerate loop")
    assert namespace["accuracy"] >= 0.9 and namespace["stepper"].optimizer is namespace["optimizer"].optimizer
