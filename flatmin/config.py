"""Validation of a composed configuration, before any work starts.

Hydra already rejects unknown group options (listing the valid ones) and unknown keys. What it
cannot know is which *values* make sense; :func:`validate` checks them against the table
``RULES`` and raises :class:`~flatmin.errors.ConfigError` with one sentence naming the key.
A rule whose key is absent from the config (``optimizer.rho`` under ``optimizer=sgd``) is
skipped, so one table serves every combination of config groups.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from flatmin.errors import ConfigError
from flatmin.data.metrics import METRICS
from flatmin.optim.schedules import KINDS

_MISSING = object()


def pick(key: str, table: dict[str, Any], default: Any = None) -> Any:
    """``${pick:${dataset.name},{flowers102: 16},32}``: the value of ``key`` in ``table``, else ``default``.

    For protocols whose settings depend on another choice (NSO's batch 16 on Flowers, GAM's released
    hyperparameters per dataset), written where the protocol is, in its experiment's config."""
    return table.get(key, default)


if not OmegaConf.has_resolver("pick"):
    OmegaConf.register_new_resolver("pick", pick)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def boolean(value: Any) -> bool:
    return isinstance(value, bool)


def positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def non_negative(value: Any) -> bool:
    return _is_number(value) and value >= 0


def positive_int(value: Any) -> bool:
    return _is_int(value) and value > 0


def non_negative_int(value: Any) -> bool:
    return _is_int(value) and value >= 0


def fraction(value: Any) -> bool:
    """A number in [0, 1)."""
    return _is_number(value) and 0 <= value < 1


def unit_interval(value: Any) -> bool:
    """A number in [0, 1]."""
    return _is_number(value) and 0 <= value <= 1


def boolean(value: Any) -> bool:
    return isinstance(value, bool)


def schedule_kinds(value: Any) -> bool:
    """A mapping from hyperparameter names to schedule kinds."""
    return isinstance(value, Mapping) and all(isinstance(kind, str) and kind in KINDS for kind in value.values())


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda value: value in choices


def list_of(*choices: str) -> Callable[[Any], bool]:
    """A non-empty list (a ``ListConfig`` included) of some of ``choices``."""
    return lambda value: (isinstance(value, (list, tuple, ListConfig)) and len(value) > 0
                          and all(item in choices for item in value))


def device_name(value: Any) -> bool:
    return isinstance(value, str) and (value in ("auto", "cpu", "cuda") or value.startswith("cuda:"))


def parameter_selection(value: Any) -> bool:
    """``all``, ``conv_and_head`` or a regular expression (flatmin.sharpness.select_parameters)."""
    if not isinstance(value, str):
        return False
    try:
        re.compile(value)
    except re.error:
        return False
    return True


def resume_target(value: Any) -> bool:
    return value is None or value == "auto" or (isinstance(value, str) and Path(value).exists())


@dataclass(frozen=True)
class Rule:
    key: str
    check: Callable[[Any], bool]
    requirement: str


RULES: tuple[Rule, ...] = (
    Rule("seed", non_negative_int, "a non-negative integer"),
    Rule("optimizer.lr", positive, "a number > 0"),
    Rule("optimizer.weight_decay", non_negative, "a number >= 0"),
    Rule("optimizer.momentum", fraction, "a number in [0, 1)"),
    Rule("optimizer.base", one_of("sgd", "adam", "adamw"), "one of sgd, adam, adamw"),
    Rule("optimizer.rho", non_negative, "a number >= 0"),
    Rule("optimizer.adaptive", boolean, "true or false"),
    Rule("optimizer.eta", non_negative, "a number >= 0"),
    Rule("optimizer.adaptive_tensors", one_of("weights", "all"), "one of weights, all"),
    Rule("optimizer.rho_p", non_negative, "a number >= 0"),
    Rule("optimizer.alpha", unit_interval, "a number in [0, 1]"),
    Rule("optimizer.beta", unit_interval, "a number in [0, 1]"),
    Rule("optimizer.gamma", non_negative, "a number >= 0"),
    Rule("optimizer.variant", one_of("released", "paper"), "one of released, paper"),
    Rule("optimizer.sigma", non_negative, "a number >= 0"),
    Rule("optimizer.num_perturbs", positive_int, "a positive integer"),
    Rule("optimizer.two_sided", boolean, "true or false"),
    Rule("optimizer.lam", unit_interval, "a number in [0, 1]"),
    Rule("optimizer.distribution", one_of("normal", "laplace", "uniform"), "one of normal, laplace, uniform"),
    Rule("optimizer.beta2", fraction, "a number in [0, 1)"),
    Rule("optimizer.delta", positive, "a number > 0"),
    Rule("optimizer.schedules", schedule_kinds, f"a mapping from hyperparameters to {', '.join(KINDS)}"),
    Rule("optimizer.lookahead.enabled", boolean, "true or false"),
    Rule("optimizer.lookahead.k", positive_int, "a positive integer"),
    Rule("optimizer.lookahead.alpha", unit_interval, "a number in [0, 1]"),
    Rule("dataset.batch_size", positive_int, "a positive integer"),
    Rule("dataset.eval_batch_size", positive_int, "a positive integer"),
    Rule("dataset.loader", one_of("auto", "gpu", "torch"), "one of auto, gpu, torch"),
    Rule("dataset.num_workers", lambda value: value == "auto" or non_negative_int(value),
         "auto or a non-negative integer"),
    Rule("dataset.task", one_of("classification", "regression"), "classification or regression"),
    Rule("dataset.metrics", list_of(*METRICS), f"a non-empty list of {', '.join(METRICS)}"),
    Rule("dataset.split.val_fraction", fraction, "a number in [0, 1)"),
    Rule("dataset.label_noise.rate", fraction, "a number in [0, 1)"),
    Rule("dataset.label_noise.mode", one_of("symmetric", "asymmetric"), "symmetric or asymmetric"),
    Rule("dataset.augment.policy", optional(one_of("autoaugment", "randaugment")),
         "null, autoaugment or randaugment"),
    Rule("dataset.augment.cutout", non_negative_int, "a non-negative integer (pixels)"),
    Rule("dataset.max_length", positive_int, "a positive integer"),
    Rule("trainer.epochs", positive_int, "a positive integer"),
    Rule("trainer.budget_passes", optional(positive_int), "null or a positive integer"),
    Rule("trainer.device", device_name, "auto, cpu, cuda or cuda:N"),
    Rule("trainer.precision", one_of("auto", "bf16", "fp16", "fp32"), "one of auto, bf16, fp16, fp32"),
    Rule("trainer.compile_mode", one_of("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
         "one of default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs"),
    Rule("trainer.accumulate_grad_batches", positive_int, "a positive integer"),
    Rule("trainer.grad_clip_norm", optional(positive), "null or a number > 0"),
    Rule("trainer.label_smoothing", fraction, "a number in [0, 1)"),
    Rule("trainer.log_every_n_steps", positive_int, "a positive integer"),
    Rule("trainer.limit_train_batches", optional(positive_int), "null or a positive integer"),
    Rule("trainer.limit_eval_batches", optional(positive_int), "null or a positive integer"),
    Rule("trainer.test_every_epoch", boolean, "true or false"),
    Rule("trainer.resume", resume_target, "null, auto, or the path of an existing checkpoint or run directory"),
    Rule("trainer.sharpness", boolean, "true or false"),
    Rule("trainer.sharpness_samples", positive_int, "a positive integer"),
    Rule("trainer.sharpness_batch_size", optional(positive_int), "null or a positive integer"),
    Rule("trainer.sharpness_top_k", positive_int, "a positive integer"),
    Rule("trainer.sharpness_max_iter", positive_int, "a positive integer"),
    Rule("trainer.sharpness_tol", non_negative, "a number >= 0"),
    Rule("trainer.sharpness_params", parameter_selection,
         "all, conv_and_head or a regular expression on parameter names"),
    Rule("trainer.sharpness_aggregate", one_of("batch_mean", "subset"), "one of batch_mean, subset"),
    Rule("trainer.sharpness_seed", non_negative_int, "a non-negative integer"),
    Rule("trainer.sharpness_m_rho", non_negative, "a number >= 0"),
    Rule("trainer.sharpness_m", positive_int, "a positive integer"),
    Rule("trainer.sharpness_m_samples", positive_int, "a positive integer"),
    Rule("trainer.sharpness_m_steps", positive_int, "a positive integer"),
    Rule("trainer.sharpness_m_norm", one_of("adaptive", "l2"), "one of adaptive, l2"),
    Rule("scheduler.name", one_of("cosine", "step", "constant"), "one of cosine, step, constant"),
    Rule("scheduler.warmup_epochs", non_negative, "a number >= 0"),
    Rule("scheduler.min_lr_factor", fraction, "a number in [0, 1)"),
    Rule("scheduler.step_size", positive, "a number of epochs > 0"),
    Rule("scheduler.gamma", positive, "a number > 0"),
)


def validate(cfg: DictConfig, prefix: str = "") -> None:
    """Check every value of ``cfg`` that ``RULES`` knows (only the keys starting with ``prefix``,
    when given); raise ``ConfigError`` on the first bad one.

    The message is one sentence: the key, what it must be, and the value it got. Interpolations
    are resolved first, so ``${...}`` values are checked as the run will see them; one that does
    not resolve (``dataset=glue/sst2`` with an image model: no ``model.name_or_path`` for the
    tokenizer) is reported the same way.
    """
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        reason = str(error).splitlines()[0].rstrip(".")
        raise ConfigError(f"{error.full_key} could not be resolved ({reason}); choose config options that fit "
                          "together (e.g. model=bert for the GLUE datasets).") from error
    for rule in (rule for rule in RULES if rule.key.startswith(prefix)):
        try:
            value = OmegaConf.select(cfg, rule.key, default=_MISSING, throw_on_missing=False)
        except Exception as error:  # an interpolation that does not resolve
            raise ConfigError(f"{rule.key} could not be resolved: {error}") from error
        if value is _MISSING:
            continue
        if not rule.check(value):
            raise ConfigError(f"{rule.key} must be {rule.requirement} (got {value!r}).")
