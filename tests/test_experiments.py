"""Every ``experiment=`` config: each setting of its sweep (one seed of each) composes and validates,
and one tiny step of each of its methods runs end to end on fixtures in the datasets' real on-disk
formats."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from flatmin.validation import validate
from flatmin.train import run
from tests.conftest import CONF, make_config
from tests.data import writers

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
FIXTURE_WRITERS = {
    "cifar10": lambda d: writers.write_cifar10(d, per_batch=4, test=4),
    "cifar100": lambda d: writers.write_cifar100(d, train=200, test=100),
    "aircraft": writers.write_aircraft, "flowers102": writers.write_flowers102, "cars": writers.write_cars,
    "caltech256": lambda d: writers.write_caltech256(d, per_class=70), "cub200": writers.write_cub200,
    "dogs": writers.write_dogs, "indoor67": writers.write_indoor67,
}
#: One tiny step: one micro-batch of 2, one evaluation batch, a sharpness estimate of two iterations.
TINY = ["trainer.epochs=1", "trainer.budget_passes=null", "trainer.limit_train_batches=1",
        "trainer.limit_eval_batches=1", "dataset.batch_size=2", "dataset.eval_batch_size=2",
        "trainer.sharpness_samples=2", "trainer.sharpness_max_iter=2"]


def sweep_jobs(experiment: str) -> list[list[str]]:
    """The overrides of every job ``python train.py -m experiment=<name>`` launches."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in parsed]
    return [list(job) for job in itertools.product(*choices)]


#: Overrides that change no choice of config: the seed, and a tuning sweep's job indices (which pick a
#: drawn point and seed when the run starts, flatmin.tuning.apply_trial).
JOB_INDICES = ("seed=", "tuning.study=", "tuning.trial=", "tuning.reseed=")


def one_seed_each(jobs: list[list[str]]) -> list[list[str]]:
    """The first job of each setting: jobs that differ only in their seed or tuning indices compose alike
    but for them."""
    seen: dict[tuple[str, ...], list[str]] = {}
    for job in jobs:
        seen.setdefault(tuple(o for o in job if not o.startswith(JOB_INDICES)), job)
    return list(seen.values())


def fixtures(root: Path, overrides: list[str], minilm_dir: Path) -> list[str]:
    """Write the job's dataset (once) under ``root``; return the overrides that point the run at it."""
    cfg = make_config(root / "probe", *overrides)
    name = cfg.dataset.name
    data_dir = root / name.replace("/", "_")
    extra = [f"paths.data_dir={data_dir}"]
    if name.startswith("glue/"):
        extra.append(f"model.name_or_path={minilm_dir}")
    elif name in FIXTURE_WRITERS:
        extra += ["dataset.download=false", "dataset.num_workers=0"]
    if cfg.dataset.get("image_size") == 224:        # the fine-tuning sets: a tiny step need not be at 224 px
        extra += ["dataset.image_size=64", "dataset.resize=72"]
    if not data_dir.exists():
        if name.startswith("glue/"):
            writers.write_glue(data_dir, name.removeprefix("glue/"))
        elif name in FIXTURE_WRITERS:
            FIXTURE_WRITERS[name](data_dir)
    if "pretrained" in cfg.model:
        weights = root / "resnet34.pth"
        if not weights.exists():
            import torchvision

            torch.save(torchvision.models.resnet34().state_dict(), weights)
        extra.append(f"model.pretrained={weights}")
    return extra


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_job_of_the_sweep_composes_and_validates(tmp_path: Path, experiment: str):
    jobs = sweep_jobs(experiment)
    assert len(jobs) >= 3
    jobs = one_seed_each(jobs)          # a seed or trial changes no choice of config: each setting composed once
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for job in jobs:
            cfg = compose("config", overrides=[f"paths.output_dir={tmp_path}", f"experiment={experiment}", *job])
            validate(cfg)
            assert cfg.optimizer.name == next(o.split("=")[1] for o in job if o.startswith("optimizer="))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_method_of_the_experiment_runs_one_tiny_step(tmp_path: Path, experiment: str, minilm_dir: Path):
    jobs = sweep_jobs(experiment)
    first_of_each_method = {next(o for o in job if o.startswith("optimizer=")): job for job in reversed(jobs)}
    for index, job in enumerate(first_of_each_method.values()):
        job = [o for o in job if not o.startswith("seed=")]
        cfg = make_config(tmp_path / f"run{index}", f"experiment={experiment}", *job,
                          *fixtures(tmp_path / "data", [f"experiment={experiment}", *job], minilm_dir), *TINY)
        summary = run(cfg)
        assert summary["status"] == "completed" and summary["global_steps"] == 1, job
        if cfg.trainer.sharpness:
            assert "trace" in summary["sharpness"], summary["sharpness"]
