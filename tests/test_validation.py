"""Every option of every config group composes and builds; bad values stop with one sentence naming the key.

Datasets and models are many and the data needs files on disk, so the full product is not built:
every dataset config composes and validates (with a model that fits it), every model config is built
in tests/models, and every combination of the training groups builds on digits with the small CNN.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from flatmin.validation import undeclared_keys, validate
from flatmin.data import DATASETS, build_dataset
from flatmin.errors import ConfigError
from flatmin.models import build_model
from flatmin.optim import build_optimizer
from flatmin.optim.lr_schedule import build_scheduler
from tests.conftest import CONF, make_config, run_cli

GROUPS = ("dataset", "model", "optimizer", "scheduler", "trainer", "logger", "paths")
TRAINING_GROUPS = ("optimizer", "scheduler", "trainer", "logger", "paths")
#: what every dataset config carries for the trainer and the model interpolations
DATASET_KEYS = ("name", "num_classes", "task", "metrics", "batch_size", "eval_batch_size", "num_workers")


def options(group: str) -> list[str]:
    """The options of a group, nested ones by their path (``glue/mrpc``)."""
    return sorted(str(p.relative_to(CONF / group).with_suffix("")) for p in (CONF / group).rglob("*.yaml"))


def test_every_group_has_options():
    for group in (*GROUPS, "experiment"):
        assert options(group), f"flatmin/conf/{group} has no options"


@pytest.mark.parametrize("dataset", options("dataset"))
def test_every_dataset_config_composes_and_validates(tmp_path: Path, dataset: str):
    model = ["model=bert"] if dataset.startswith("glue/") else []
    cfg = make_config(tmp_path, f"dataset={dataset}", *model)
    validate(cfg)
    assert cfg.dataset.name == dataset and dataset in DATASETS
    assert all(key in cfg.dataset for key in DATASET_KEYS)
    assert cfg.trainer.monitor == f"val/{cfg.dataset.metrics[0]}"


def test_every_optimizer_and_scheduler_pair_builds_on_digits_with_every_other_option(tmp_path: Path):
    """Every optimizer with every scheduler (the pairs that interact), the options of the other
    training groups taken in turn, so that each of them builds too (the full product grows as the
    product of the groups' sizes and adds nothing the pairs do not test)."""
    splits = build_dataset(make_config(tmp_path).dataset)
    x, _ = splits.train[0]
    pairs = list(itertools.product(options("optimizer"), options("scheduler")))
    others = [options(group) for group in TRAINING_GROUPS[2:]]
    combinations = [(*pair, *(choices[index % len(choices)] for choices in others))
                    for index, pair in enumerate(pairs)]
    for group, chosen in zip(TRAINING_GROUPS, zip(*combinations)):
        assert set(chosen) == set(options(group)), group
    for combination in combinations:
        overrides = [f"{group}={option}" for group, option in zip(TRAINING_GROUPS, combination)]
        cfg = make_config(tmp_path, *overrides)
        validate(cfg)
        model = build_model(cfg.model)
        assert model(x.unsqueeze(0)).shape == (1, cfg.dataset.num_classes), overrides
        optimizer = build_optimizer(cfg.optimizer, model)
        build_scheduler(cfg.scheduler, optimizer, steps_per_epoch=3, epochs=cfg.trainer.epochs)
        assert isinstance(optimizer, torch.optim.Optimizer)


def test_an_image_model_on_a_text_dataset_is_one_sentence(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"^dataset.tokenizer could not be resolved \(Interpolation key "
                                          r"'model.name_or_path' not found\); choose config options that fit"):
        validate(make_config(tmp_path, "dataset=glue/sst2"))


def test_every_key_of_every_option_has_a_declared_type(tmp_path: Path):
    """Issue 20: a key without a rule would pass whatever was typed (``trainer.channels_last=maybe`` is
    truthy), so every option of every group, and every experiment, holds only declared keys."""
    for group in ("dataset", "model", "scheduler", "trainer", "logger", "paths", "experiment"):
        for option in options(group):
            model = ["model=bert"] if option.startswith("glue/") else []
            cfg = make_config(tmp_path, f"{group}={option}", *model)
            assert undeclared_keys(OmegaConf.to_container(cfg, resolve=True)) == [], f"{group}={option}"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_configs_compose(tmp_path: Path, experiment: str):
    cfg = make_config(tmp_path, f"experiment={experiment}")
    validate(cfg)


INVALID = [
    (["optimizer.lr=-0.1"], "optimizer.lr must be a number > 0 (got -0.1)."),
    (["optimizer.lr=0"], "optimizer.lr must be a number > 0 (got 0)."),
    (["optimizer=sam", "optimizer.rho=-0.05"], "optimizer.rho must be a number >= 0 (got -0.05)."),
    (["trainer.epochs=0"], "trainer.epochs must be a positive integer (got 0)."),
    (["trainer.epochs=-2"], "trainer.epochs must be a positive integer (got -2)."),
    (["dataset.batch_size=0"], "dataset.batch_size must be a positive integer (got 0)."),
    (["dataset.batch_size=-8"], "dataset.batch_size must be a positive integer (got -8)."),
    (["dataset=cifar10", "dataset.num_workers=many"],
     "dataset.num_workers must be auto or a non-negative integer (got 'many')."),
    (["trainer.precision=fp8"], "trainer.precision must be one of auto, bf16, fp16, fp32 (got 'fp8')."),
    (["dataset.label_noise.rate=1.2"], "dataset.label_noise.rate must be a number in [0, 1) (got 1.2)."),
    (["dataset.label_noise.mode=pairs"], "dataset.label_noise.mode must be symmetric or asymmetric (got 'pairs')."),
    (["dataset=cifar10", "dataset.augment.policy=trivial"],
     "dataset.augment.policy must be null, autoaugment or randaugment (got 'trivial')."),
    (["trainer.test_every_epoch=yes"], "trainer.test_every_epoch must be true or false (got 'yes')."),
    (["trainer.sharpness=yes"], "trainer.sharpness must be true or false (got 'yes')."),
    (["trainer.sharpness_samples=0"], "trainer.sharpness_samples must be a positive integer (got 0)."),
    (["trainer.sharpness_tol=-1e-3"], "trainer.sharpness_tol must be a number >= 0 (got -0.001)."),
    (["trainer.sharpness_params='(unclosed'"],
     "trainer.sharpness_params must be all, conv_and_head or a regular expression on parameter names "
     "(got '(unclosed')."),
    (["trainer.sharpness_aggregate=max"], "trainer.sharpness_aggregate must be one of batch_mean, subset (got 'max')."),
    (["optimizer=asam", "optimizer.adaptive=1"], "optimizer.adaptive must be true or false (got 1)."),
    (["optimizer=gam", "optimizer.rho_p=-0.02"], "optimizer.rho_p must be a number >= 0 (got -0.02)."),
    (["optimizer=gam", "optimizer.alpha=1.5"], "optimizer.alpha must be a number in [0, 1] (got 1.5)."),
    (["optimizer=gam", "optimizer.beta=-0.1"], "optimizer.beta must be a number in [0, 1] (got -0.1)."),
    (["optimizer=gam", "optimizer.gamma=-1"], "optimizer.gamma must be a number >= 0 (got -1)."),
    (["optimizer=gam", "optimizer.variant=arxiv"], "optimizer.variant must be one of released, paper (got 'arxiv')."),
    (["optimizer=nso", "optimizer.sigma=-0.01"], "optimizer.sigma must be a number >= 0 (got -0.01)."),
    (["optimizer=nso", "optimizer.num_perturbs=0"], "optimizer.num_perturbs must be a positive integer (got 0)."),
    (["optimizer=nso", "optimizer.num_perturbs=1.5"], "optimizer.num_perturbs must be a positive integer (got 1.5)."),
    (["optimizer=nso", "optimizer.two_sided=maybe"], "optimizer.two_sided must be true or false (got 'maybe')."),
    (["optimizer=nso", "optimizer.lam=1.2"], "optimizer.lam must be a number in [0, 1] (got 1.2)."),
    (["optimizer=nso", "optimizer.distribution=cauchy"],
     "optimizer.distribution must be one of normal, laplace, uniform (got 'cauchy')."),
    (["optimizer=nso", "optimizer.schedules.sigma=cubic"],
     "optimizer.schedules must be a mapping from hyperparameters to constant, linear, exp, proportional_to_lr "
     "(got {'sigma': 'cubic'})."),
    (["optimizer=sgd_tracer", "optimizer.beta2=1.0"], "optimizer.beta2 must be a number in [0, 1) (got 1.0)."),
    (["optimizer=adam_tracer", "optimizer.delta=0"], "optimizer.delta must be a number > 0 (got 0)."),
    (["optimizer.lookahead.enabled=yes"], "optimizer.lookahead.enabled must be true or false (got 'yes')."),
    (["optimizer.lookahead.k=0"], "optimizer.lookahead.k must be a positive integer (got 0)."),
    (["optimizer=gam", "optimizer.lookahead.alpha=2"], "optimizer.lookahead.alpha must be a number in [0, 1] (got 2)."),
    (["optimizer.averaging.kind=mean"], "optimizer.averaging.kind must be one of none, ema, swa (got 'mean')."),
    (["optimizer=sam", "optimizer.averaging.decay=1.5"],
     "optimizer.averaging.decay must be a number in [0, 1] (got 1.5)."),
    (["optimizer.averaging.every=0"], "optimizer.averaging.every must be a positive integer (got 0)."),
    (["optimizer.averaging.start=-3"], "optimizer.averaging.start must be a non-negative integer (got -3)."),
    (["optimizer.averaging.interval=minute"],
     "optimizer.averaging.interval must be one of step, epoch (got 'minute')."),
    (["optimizer.averaging.kind=swa", "optimizer.averaging.anneal_epochs=2.5"],
     "optimizer.averaging.anneal_epochs must be a non-negative integer (got 2.5)."),
    (["optimizer.averaging.kind=swa", "optimizer.averaging.anneal_strategy=exp"],
     "optimizer.averaging.anneal_strategy must be one of cos, linear (got 'exp')."),
    (["optimizer.averaging.kind=swa", "optimizer.averaging.swa_lr=0"],
     "optimizer.averaging.swa_lr must be null or a number > 0 (got 0)."),
    (["optimizer.averaging.kind=ema", "optimizer.averaging.swa_lr=0.05"],
     "optimizer.averaging.swa_lr (0.05) is the SWA learning rate, and optimizer.averaging.kind is 'ema'; set "
     "kind=swa or swa_lr=null."),
    (["trainer.channels_last=maybe"], "trainer.channels_last must be true or false (got 'maybe')."),
    (["trainer.deterministic=1"], "trainer.deterministic must be true or false (got 1)."),
    (["trainer.progress_bar=no_"], "trainer.progress_bar must be true or false (got 'no_')."),
    (["dataset=cifar10", "dataset.augment.crop_flip=false_"],
     "dataset.augment.crop_flip must be true or false (got 'false_')."),
    (["dataset=cifar10", "dataset.download=maybe"], "dataset.download must be true or false (got 'maybe')."),
    (["dataset=cifar10", "dataset.normalize.std=[0.2,0,0.2]"],
     "dataset.normalize.std must be a list of numbers > 0, one per input channel (got [0.2, 0, 0.2])."),
    (["dataset=cifar10", "dataset.normalize.mean=[0.5,0.5]"],
     "dataset.normalize.mean must have one value per input channel: 3 (dataset.in_channels), not 2."),
    (["dataset.split.seed=-1"], "dataset.split.seed must be a non-negative integer (got -1)."),
    (["model=pyramidnet110", "model.bottleneck=maybe"], "model.bottleneck must be true or false (got 'maybe')."),
    (["model.dropout=1.0"], "model.dropout must be a number in [0, 1) (got 1.0)."),
    (["model.widths=[32,0]"], "model.widths must be a non-empty list of positive integers (got [32, 0])."),
    (["model=wrn16_8", "model.init=he"], "model.init must be one of official, davda54, sam_jax (got 'he')."),
    (["logger=wandb", "logger.wandb.mode=offlne"],
     "logger.wandb.mode must be one of offline, online, disabled (got 'offlne')."),
    (["+trainer.epoch=3"], "trainer.epoch is not a setting flatmin knows, so nothing would read it; check its "
     "spelling (python train.py --cfg job lists the settings)."),
    (["+dataset.augment.mixup=0.2"], "dataset.augment.mixup is not a setting flatmin knows, so nothing would read "
     "it; check its spelling (python train.py --cfg job lists the settings)."),
    (["trainer.resume=/no/such/checkpoint.pt"],
     "trainer.resume must be null, auto, or the path of an existing checkpoint or run directory "
     "(got '/no/such/checkpoint.pt')."),
]


@pytest.mark.parametrize(("overrides", "sentence"), INVALID)
def test_invalid_values_give_one_sentence(tmp_path: Path, overrides: list[str], sentence: str):
    with pytest.raises(ConfigError) as caught:
        validate(make_config(tmp_path, *overrides))
    assert str(caught.value) == sentence


@pytest.mark.parametrize(("overrides", "sentence"), [
    (["optimizer.lr=-1"], "optimizer.lr must be"),
    (["optimizer=adam", "optimizer.amsgrad=false_"], "optimizer.amsgrad must be true or false"),
    (["trainer.channels_last=maybe"], "trainer.channels_last must be true or false"),
    (["optimizer.averaging.kind=ema", "optimizer.averaging.start=50", "optimizer.averaging.interval=epoch"],
     "optimizer.averaging would average nothing"),
    (["optimizer.averaging.kind=ema", "optimizer.averaging.decay=1"], "optimizer.averaging.decay=1 keeps the EMA"),
    (["trainer.accumulate_grad_batches=32"], "trainer.accumulate_grad_batches (32) is more than the 16 micro-batches")])
def test_command_line_exits_2_with_one_sentence(tmp_path: Path, overrides: list[str], sentence: str):
    """Issue 20: each of these trained silently on (a truthy string, an average that never started)."""
    result = run_cli(*overrides, log_dir=tmp_path, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [line for line in lines if line.startswith("flatmin: error:")] and len(lines) == 1
    assert lines[0].startswith(f"flatmin: error: {sentence}")


def test_unknown_option_lists_the_valid_ones(tmp_path: Path):
    result = run_cli("optimizer=nosuch", log_dir=tmp_path, check=False)
    assert result.returncode == 2                     # refused input (README, "When things go wrong")
    assert "Could not find 'optimizer/nosuch'" in result.stderr
    for option in options("optimizer"):
        assert option in result.stderr


def test_a_misspelt_key_that_hydra_refuses_exits_2_like_any_refused_input(tmp_path: Path):
    result = run_cli("trainer.epoch=3", log_dir=tmp_path, check=False)
    assert result.returncode == 2
    assert "Could not override 'trainer.epoch'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
