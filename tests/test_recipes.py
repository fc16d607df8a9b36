"""Every experiment is its released recipe: each job of its sweep composes with the settings the
released training script fixes (docs/recipes.md), so a later edit cannot drift from them silently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from flatmin.validation import validate
from tests.conftest import CONF
from tests.test_experiments import one_seed_each, sweep_jobs

#: The released values, per experiment: (the jobs they hold for, by their sweep overrides; the settings).
RELEASED: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {
    "sam_cifar_wrn16": [  # davda54/sam@3c3afdb example/train.py
        ({}, {"dataset.name": "cifar10", "dataset.split.val_fraction": 0, "dataset.batch_size": 128,
              "dataset.augment.crop_flip": True, "dataset.augment.cutout": 16,
              "dataset.augment.cutout_probability": 0.5, "model.depth": 16, "model.widen_factor": 8,
              "model.dropout": 0.0, "model.init": "davda54", "optimizer.lr": 0.1, "optimizer.momentum": 0.9,
              "optimizer.nesterov": False, "optimizer.weight_decay": 5e-4, "scheduler.name": "step",
              "scheduler.milestones": [0.3, 0.6, 0.8], "scheduler.gamma": 0.2, "scheduler.interval": "epoch",
              "trainer.epochs": 200, "trainer.label_smoothing": 0.1, "trainer.label_smoothing_form": "released",
              "trainer.grad_clip_norm": None, "trainer.precision": "fp32"}),
        ({"optimizer": "sam"}, {"optimizer.rho": 0.05, "optimizer.adaptive": False}),
        ({"optimizer": "asam"}, {"optimizer.rho": 2.0, "optimizer.adaptive": True, "optimizer.eta": 0.0,
                                 "optimizer.adaptive_tensors": "all"}),
        ({"seed": 42}, {"seed": 42}),
    ],
    "sam_cifar_wrn28": [  # google-research/sam@dae9904 sam_jax (final runs, use_test_set)
        ({}, {"dataset.split.val_fraction": 0, "dataset.batch_size": 128, "optimizer.lr": 0.1,
              "optimizer.momentum": 0.9, "optimizer.nesterov": True, "scheduler.name": "cosine",
              "trainer.epochs": 200, "trainer.budget_passes": 400, "trainer.grad_clip_norm": 5.0,
              "trainer.precision": "fp32", "model.depth": 28, "model.widen_factor": 10, "model.init": "sam_jax"}),
        ({"optimizer": "sam"}, {"optimizer.rho": 0.05}),
    ],
    "gam_cifar": [  # xxgege/GAM@694133d main_cifar.py
        ({}, {"dataset.split.val_fraction": 0, "dataset.batch_size": 128, "optimizer.lr": 0.1,
              "optimizer.momentum": 0.9, "optimizer.weight_decay": 5e-4, "scheduler.name": "cosine",
              "scheduler.interval": "epoch", "trainer.epochs": 200, "trainer.label_smoothing": 0.1,
              "trainer.label_smoothing_form": "released", "trainer.test_every_epoch": True,
              "trainer.precision": "fp32"}),
        ({"dataset": "cifar10"}, {"dataset.normalize.mean": [0.49139968, 0.48215827, 0.44653124],
                                  "dataset.normalize.std": [0.2023, 0.1994, 0.2010]}),
        ({"dataset": "cifar100"}, {"dataset.normalize.mean": [0.5071, 0.4867, 0.4408],
                                   "dataset.normalize.std": [0.2675, 0.2565, 0.2761]}),
        ({"model": "pyramidnet110"}, {"model.depth": 110, "model.alpha": 270, "model.bottleneck": True}),
        # (rho, rho_p, beta, alpha, gamma) per dataset and model
        *[({"optimizer": "gam", "dataset": dataset, "model": model},
           dict(zip(("optimizer.rho", "optimizer.rho_p", "optimizer.beta", "optimizer.alpha", "optimizer.gamma"),
                    values), **{"optimizer.variant": "released"}))
          for (dataset, model), values in {("cifar100", "resnet18"): (0.2, 0.02, 0.5, 0.6, 0.03),
                                           ("cifar100", "pyramidnet110"): (0.2, 0.04, 0.3, 0.5, 0.05),
                                           ("cifar10", "resnet18"): (0.2, 0.03, 0.1, 0.1, 0.05),
                                           ("cifar10", "pyramidnet110"): (0.2, 0.03, 0.1, 0.1, 0.03)}.items()],
    ],
    "nso_finetune": [  # VirtuosoResearch/Noise-stability-optimization@bf11dc2 exps_on_image_datasets
        ({}, {"optimizer.base": "adam", "optimizer.lr": 1e-4, "optimizer.amsgrad": True, "optimizer.weight_decay": 0.0,
              "scheduler.name": "step", "scheduler.step_size": 10, "scheduler.gamma": 0.1, "trainer.epochs": 30,
              "trainer.precision": "fp32", "trainer.sharpness": True, "trainer.sharpness_params": "conv_and_head"}),
        ({"dataset": "flowers102"}, {"dataset.batch_size": 16}),
        ({"dataset": "aircraft"}, {"dataset.batch_size": 32}),
        ({"optimizer": "nso"}, {"optimizer.sigma": 0.01, "optimizer.num_perturbs": 1, "optimizer.two_sided": True,
                                "optimizer.lam": 0.0, "optimizer.clean_pass": "always",
                                "optimizer.schedule_interval": "epoch"}),
        ({"optimizer": "sam"}, {"optimizer.rho": 0.01}),
        ({"optimizer": "asam"}, {"optimizer.eta": 0.0, "optimizer.adaptive_tensors": "all"}),
    ],
    "fsam_cifar100": [  # nblt/F-SAM run.sh, train.py, utils.py
        ({}, {"dataset.name": "cifar100", "dataset.split.val_fraction": 0, "dataset.batch_size": 128,
              "dataset.normalize.mean": [0.4914, 0.4822, 0.4465], "dataset.normalize.std": [0.2023, 0.1994, 0.2010],
              "dataset.augment.crop_flip": True, "dataset.augment.cutout": 16,
              "dataset.augment.cutout_probability": 0.5, "model.depth": 18, "optimizer.lr": 0.05,
              "optimizer.momentum": 0.9, "optimizer.weight_decay": 1e-3, "scheduler.name": "cosine",
              "scheduler.interval": "step", "scheduler.min_lr_factor": 0.0, "trainer.epochs": 200,
              "trainer.label_smoothing": 0.0, "trainer.precision": "fp32"}),
        ({"optimizer": "sam"}, {"optimizer.rho": 0.2}),
        ({"optimizer": "friendly_sam"}, {"optimizer.rho": 0.2, "optimizer.sigma": 1.0, "optimizer.lmbda": 0.6}),
    ],
    "nso_glue_mrpc": [  # the same release, exps_on_text_datasets
        ({}, {"dataset.batch_size": 8, "dataset.max_length": 128, "trainer.epochs": 10, "trainer.precision": "fp32",
              "optimizer.base": "adamw", "optimizer.lr": 1e-5, "optimizer.weight_decay": 0.0,
              "optimizer.eps": 1e-6}),
        ({"optimizer": "nso"}, {"optimizer.sigma": 0.01, "optimizer.num_perturbs": 2, "optimizer.two_sided": False,
                                "optimizer.clean_pass": "always", "scheduler.name": "constant"}),
        ({"optimizer": "adamw"}, {"scheduler.name": "linear", "scheduler.min_lr_factor": 0.0,
                                  "scheduler.warmup_epochs": 0}),
    ],
}


def job_choices(job: list[str]) -> dict[str, Any]:
    return {key: OmegaConf.create({"v": value}).v for key, value in (override.split("=", 1) for override in job)}


@pytest.mark.parametrize("experiment", list(RELEASED))
def test_every_job_of_the_sweep_has_the_released_settings(tmp_path: Path, experiment: str):
    checked, jobs = 0, one_seed_each(sweep_jobs(experiment))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for job in jobs:
            cfg = compose("config", overrides=[f"paths.output_dir={tmp_path}", f"experiment={experiment}", *job])
            validate(cfg)
            resolved, choices = OmegaConf.to_container(cfg, resolve=True), job_choices(job)
            for when, settings in RELEASED[experiment]:
                if any(choices.get(key) != value for key, value in when.items()):
                    continue
                for key, value in settings.items():
                    actual = resolved
                    for part in key.split("."):
                        actual = actual[part]
                    expected = pytest.approx(value) if isinstance(value, (float, list)) else value
                    assert actual == expected, f"{experiment} {job}: {key} is {actual!r}, released {value!r}"
                    checked += 1
    assert checked > 0
