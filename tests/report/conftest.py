"""Synthetic run directories, written file by file as ``flatmin.train.run`` writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from flatmin.optim.registry import options
from tests.conftest import make_config


@pytest.fixture(scope="session")
def base_config(tmp_path_factory) -> dict[str, Any]:
    """The resolved default config, as a run's config.yaml holds it."""
    return OmegaConf.to_container(make_config(tmp_path_factory.mktemp("base")), resolve=True)


def write_run(run_dir: Path, base: dict[str, Any], settings: dict[str, Any], choices: dict[str, Any] | None,
              summary: dict[str, Any] | None, epochs: list[dict[str, Any]] = ()) -> Path:
    """A run directory: config.yaml (``base`` with the dotted ``settings`` set), summary.json
    (``summary`` with ``choices``; none when None) and metrics.jsonl (``epochs``). The optimizer
    option (``settings["optimizer.name"]``, else the choice) also sets its ``method`` and ``base``,
    as composing that option would."""
    config = json.loads(json.dumps(base))
    option = settings.get("optimizer.name") or (choices or {}).get("optimizer")
    if option is not None:
        own = options()[option]
        settings = {"optimizer.name": option, "optimizer.method": own.get("method"),
                    "optimizer.base": own.get("base", "sgd"), **settings}
    for key, value in {**settings, "paths.output_dir": str(run_dir)}.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps({**summary, "choices": choices or {}}))
    lines = [json.dumps({"event": "step", "step": 1, "epoch": 1, "train/loss": 9.9})]
    lines += [json.dumps({"event": "epoch", **record}) for record in epochs]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def completed(test_accuracy: float, val_accuracy: float = 0.9, sharpness: dict[str, float] | None = None,
              best_val_test_accuracy: float | None = None, best_on_test: float | None = None) -> dict[str, Any]:
    """A completed run's summary.json (with the best epoch on test when ``best_on_test`` is given)."""
    summary = {"status": "completed", "final": {"val/accuracy": val_accuracy},
               "best_val": {"epoch": 2, "val/accuracy": val_accuracy, "val/loss": 0.3, "train/loss": 0.1},
               "test": {"last": {"test/accuracy": test_accuracy, "test/loss": 0.25},
                        "best_val": {"test/accuracy": best_val_test_accuracy or test_accuracy, "test/loss": 0.2}}}
    if sharpness:
        summary["sharpness"] = {**sharpness, "samples": 1000, "params": "all"}
    if best_on_test is not None:
        summary["best_test_over_epochs"] = {"epoch": 3, "test/loss": 0.15, "test/accuracy": best_on_test}
    return summary


SAM_CHOICES = {"experiment": "sam_cifar_wrn28", "dataset": "cifar10", "model": "wrn28_10"}


@pytest.fixture(scope="session")
def synthetic_runs(tmp_path_factory, base_config) -> Path:
    """A folder of runs: the SAM table's experiment (SAM at two rho, SGD, CIFAR-100 cutout, one
    model outside the paper's layout), digits runs without an experiment that measured sharpness,
    one failed run and one unfinished run."""
    root = tmp_path_factory.mktemp("runs")

    def sam_run(name: str, seed: int, accuracy: float, method: str = "sam", dataset: str = "cifar10",
                cutout: int = 0, model: str = "wrn28_10", rho: float | None = 0.05) -> None:
        settings = {"seed": seed, "dataset.name": dataset, "dataset.augment.policy": None,
                    "dataset.augment.cutout": cutout, "optimizer.name": method, "model._target_": f"nets.{model}"}
        if rho is not None:
            settings["optimizer.rho"] = rho
        epochs = [{"epoch": epoch, "train/loss": 1 / epoch, "val/accuracy": accuracy - 0.1 / epoch}
                  for epoch in (1, 2, 3)]
        write_run(root / "sam_sweep" / name, base_config, settings,
                  {**SAM_CHOICES, "optimizer": method, "dataset": dataset, "model": model}, completed(accuracy), epochs)

    for seed, accuracy in enumerate((0.970, 0.972, 0.968)):
        sam_run(f"sam_{seed}", seed, accuracy)
    for seed, accuracy in enumerate((0.975, 0.976)):
        sam_run(f"sam_rho_{seed}", seed, accuracy, rho=0.1)
    for seed, accuracy in enumerate((0.965, 0.967)):
        sam_run(f"sgd_{seed}", seed, accuracy, method="sgd", rho=None)
    sam_run("c100_cutout", 0, 0.85, dataset="cifar100", cutout=8)
    sam_run("wrn16", 0, 0.96, model="wrn16_8")

    digits = {"optimizer": "sgd", "dataset": "digits", "model": "small_cnn"}
    for seed, accuracy in enumerate((0.95, 0.97)):
        sharpness = {"trace": 100.0 + 10 * seed, "lambda_max": 5.0 + seed, "eigenvalues": [5.0 + seed],
                     "m_sharpness": 0.1 * (seed + 1)}
        write_run(root / "digits" / str(seed), base_config, {"seed": seed}, digits,
                  completed(accuracy, sharpness=sharpness), [{"epoch": 1, "train/loss": 1.0, "val/accuracy": 0.5}])
    write_run(root / "digits" / "2", base_config, {"seed": 2}, None,
              {"status": "failed", "error": "RuntimeError: out of memory"})
    write_run(root / "digits" / "3", base_config, {"seed": 3}, None, None)
    return root


@pytest.fixture(scope="session")
def gam_runs(tmp_path_factory, base_config) -> Path:
    """GAM on CIFAR-10 with ResNet-18, two seeds run with ``trainer.test_every_epoch``: final test
    accuracies 0.95 and 0.94, best epochs on test 0.96 and 0.975."""
    root = tmp_path_factory.mktemp("gam")
    choices = {"experiment": "gam_cifar", "optimizer": "gam", "dataset": "cifar10", "model": "resnet18"}
    for seed, (final, best) in enumerate(((0.95, 0.96), (0.94, 0.975))):
        write_run(root / str(seed), base_config, {"seed": seed, "trainer.test_every_epoch": True}, choices,
                  completed(final, best_on_test=best))
    return root
