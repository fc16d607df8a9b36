"""Validation of a composed configuration, before any work starts; it builds nothing.

Hydra already rejects unknown group options (listing the valid ones) and unknown keys, except the
ones added with ``+``. What it cannot know is which *values* make sense; :func:`validate` checks
every key against the table ``RULES`` (which declares them all: a key without a rule is refused)
and the ``optimizer`` section against the declarations of the shared settings and of its
method (:func:`flatmin.optim.settings.check_optimizer_config`), and raises
:class:`~flatmin.errors.ConfigError` with one sentence naming the key. A rule whose key is absent
from the config (``dataset.augment.cutout`` under ``dataset=digits``) is skipped, so one table
serves every combination of config groups.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from flatmin.checks import (BOOLEAN, FRACTION, MAPPING, NON_NEGATIVE, NON_NEGATIVE_INT, NUMBER, POSITIVE,
                            POSITIVE_INT, TEXT, UNIT_INTERVAL, Check, is_number, list_of, one_of, optional)
from flatmin.data import DATASETS, GLUE_TASKS, evaluation_prefixes
from flatmin.data.metrics import METRICS
from flatmin.data.task import SMOOTHING_FORMS
from flatmin.errors import ConfigError
from flatmin.models.wide_resnet import INITS
from flatmin.optim.multipass import METHODS
from flatmin.optim.settings import check_optimizer_config
from flatmin.runtime.device import DEVICES
from flatmin.runtime.precision import PRECISIONS

_MISSING = object()


METRIC_LIST = Check(lambda value: (isinstance(value, (list, tuple, ListConfig)) and len(value) > 0
                                   and all(item in METRICS for item in value)),
                    f"a non-empty list of {', '.join(METRICS)}")
DEVICE = Check(lambda value: isinstance(value, str) and (value in DEVICES or value.startswith("cuda:")),
               f"{', '.join(DEVICES)} or cuda:N")


def _is_regex(value: Any) -> bool:
    try:
        re.compile(value)
    except (re.error, TypeError):
        return False
    return True


#: ``all``, ``conv_and_head`` or a regular expression (flatmin.sharpness.select_parameters).
PARAMETER_SELECTION = Check(lambda value: isinstance(value, str) and _is_regex(value),
                            "all, conv_and_head or a regular expression on parameter names")
#: The measures of ``trainer.sharpness_measures`` (flatmin.sharpness.measures), in the order they run.
SHARPNESS_MEASURES = ("hessian", "esd", "worst_case", "average", "landscape1d", "landscape2d", "interpolation")


def measure_names(value: Any) -> list[str]:
    """The names of ``trainer.sharpness_measures``: a comma-separated string, or a list (Hydra's
    ``trainer.sharpness_measures=[esd,average]``, since an unquoted comma there asks for a sweep)."""
    return value.split(",") if isinstance(value, str) else list(value)


MEASURE_LIST = Check(lambda value: isinstance(value, (str, list, tuple, ListConfig)) and len(value) > 0
                     and all(name in SHARPNESS_MEASURES for name in measure_names(value)),
                     f"a comma-separated list of {', '.join(SHARPNESS_MEASURES)}")
#: Landscape direction settings in the config's words (``none`` for the API's None).
LANDSCAPE_NORMS = ("filter", "layer", "weight", "dfilter", "dlayer", "none")
LANDSCAPE_IGNORES = ("biasbn", "none")


def _is_grid(value: Any) -> bool:
    """``min:max:num``: finite numbers min and max and an integer num >= 1 (flatmin.sharpness.parse_grid)."""
    parts = value.split(":") if isinstance(value, str) else []
    try:
        return len(parts) == 3 and all(math.isfinite(float(end)) for end in parts[:2]) and int(parts[2]) >= 1
    except ValueError:
        return False


GRID = Check(_is_grid, "a grid min:max:num of finite numbers and an integer num >= 1, e.g. -1:1:51")
RESUME_TARGET = Check(lambda value: value is None or value == "auto"
                      or (isinstance(value, str) and Path(value).exists()),
                      "null, auto, or the path of an existing checkpoint or run directory")
NUM_WORKERS = Check(lambda value: value == "auto" or NON_NEGATIVE_INT(value), "auto or a non-negative integer")
SPLIT_NAMES = Check(lambda value: MAPPING(value) and len(value) > 0 and all(TEXT(name) for name in value.values()),
                    "a mapping of metric prefixes to split names")
WANDB_MODE = one_of("offline", "online", "disabled")
TUNING_SOURCE = Check(lambda value: value is None or (isinstance(value, str) and Path(value).is_dir()),
                      "null or the directory of a tuning sweep (sweep=crowded_valley)")


@dataclass(frozen=True)
class Rule:
    key: str
    check: Check


#: Every setting of every config group but ``optimizer`` (declared in :mod:`flatmin.optim.settings` and
#: by each method) and ``hydra``: :func:`validate` refuses a key that no rule covers (a rule on a
#: mapping covers its keys), so nothing typed on the command line is passed on unchecked.
RULES: tuple[Rule, ...] = (
    Rule("seed", NON_NEGATIVE_INT),
    Rule("paths.data_dir", TEXT),
    Rule("paths.log_dir", TEXT),
    Rule("paths.output_dir", TEXT),
    Rule("dataset.name", one_of(*sorted(DATASETS))),
    Rule("dataset.data_dir", TEXT),
    Rule("dataset.download", BOOLEAN),
    Rule("dataset.num_classes", POSITIVE_INT),
    Rule("dataset.in_channels", POSITIVE_INT),
    Rule("dataset.image_size", POSITIVE_INT),
    Rule("dataset.resize", POSITIVE_INT),
    Rule("dataset.normalize.mean", list_of(NUMBER, "a list of numbers, one per input channel")),
    Rule("dataset.normalize.std", list_of(POSITIVE, "a list of numbers > 0, one per input channel")),
    Rule("dataset.batch_size", POSITIVE_INT),
    Rule("dataset.eval_batch_size", POSITIVE_INT),
    Rule("dataset.loader", one_of("auto", "gpu", "torch")),
    Rule("dataset.num_workers", NUM_WORKERS),
    Rule("dataset.task", one_of("classification", "regression", requirement="classification or regression")),
    Rule("dataset.metrics", METRIC_LIST),
    Rule("dataset.eval_splits", SPLIT_NAMES),
    Rule("dataset.split.val_fraction", FRACTION),
    Rule("dataset.split.test_fraction", Check(lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)")),
    Rule("dataset.split.seed", NON_NEGATIVE_INT),
    Rule("dataset.split.train_per_class", POSITIVE_INT),
    Rule("dataset.split.val_per_class", POSITIVE_INT),
    Rule("dataset.split.test_per_class", POSITIVE_INT),
    Rule("dataset.label_noise", optional(MAPPING)),
    Rule("dataset.label_noise.rate", FRACTION),
    Rule("dataset.label_noise.mode", one_of("symmetric", "asymmetric", requirement="symmetric or asymmetric")),
    Rule("dataset.label_noise.seed", NON_NEGATIVE_INT),
    Rule("dataset.augment.crop_flip", BOOLEAN),
    Rule("dataset.augment.policy", one_of(None, "autoaugment", "randaugment",
                                          requirement="null, autoaugment or randaugment")),
    Rule("dataset.augment.cutout", Check(NON_NEGATIVE_INT, "a non-negative integer (pixels)")),
    Rule("dataset.augment.cutout_probability", UNIT_INTERVAL),
    Rule("dataset.task_name", one_of(*GLUE_TASKS)),
    Rule("dataset.text_columns", Check(lambda v: list_of(TEXT, "")(v) and len(v) in (1, 2),
                                       "a list of one or two column names")),
    Rule("dataset.hub", TEXT),
    Rule("dataset.tokenizer", TEXT),
    Rule("dataset.max_length", POSITIVE_INT),
    # model: the keyword arguments of the class or factory its _target_ names (flatmin.models)
    Rule("model._target_", TEXT),
    Rule("model.num_classes", POSITIVE_INT),
    Rule("model.num_labels", POSITIVE_INT),
    Rule("model.in_channels", POSITIVE_INT),
    Rule("model.depth", POSITIVE_INT),
    Rule("model.widen_factor", POSITIVE_INT),
    Rule("model.widths", Check(lambda v: list_of(POSITIVE_INT, "")(v) and len(v) > 0,
                               "a non-empty list of positive integers")),
    Rule("model.alpha", POSITIVE),
    Rule("model.bottleneck", BOOLEAN),
    Rule("model.shakedrop_final_survival", optional(Check(lambda v: is_number(v) and 0 < v <= 1,
                                                          "a number in (0, 1]"))),
    Rule("model.dropout", FRACTION),
    Rule("model.drop_rate", FRACTION),
    Rule("model.init", one_of(*INITS)),
    Rule("model.name", TEXT),
    Rule("model.name_or_path", TEXT),
    Rule("model.pretrained", Check(lambda v: isinstance(v, bool) or TEXT(v),
                                   "true, false or the path of a weights file")),
    Rule("trainer.epochs", POSITIVE_INT),
    Rule("trainer.budget_passes", optional(POSITIVE_INT)),
    Rule("trainer.budget_seconds", optional(POSITIVE)),
    Rule("trainer.device", DEVICE),
    Rule("trainer.precision", one_of("auto", *PRECISIONS)),
    Rule("trainer.channels_last", BOOLEAN),
    Rule("trainer.compile", BOOLEAN),
    Rule("trainer.compile_mode", one_of("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")),
    Rule("trainer.compile_backend", TEXT),
    Rule("trainer.accumulate_grad_batches", POSITIVE_INT),
    Rule("trainer.grad_clip_norm", optional(POSITIVE)),
    Rule("trainer.label_smoothing", FRACTION),
    Rule("trainer.label_smoothing_form", one_of(*SMOOTHING_FORMS)),
    Rule("trainer.deterministic", BOOLEAN),
    Rule("trainer.monitor", TEXT),
    Rule("trainer.monitor_mode", one_of("auto", "min", "max")),
    Rule("trainer.divergence_threshold", optional(Check(lambda v: POSITIVE(v) and v > 1, "a number > 1"))),
    Rule("trainer.log_every_n_steps", POSITIVE_INT),
    Rule("trainer.progress_bar", BOOLEAN),
    Rule("trainer.limit_train_batches", optional(POSITIVE_INT)),
    Rule("trainer.limit_eval_batches", optional(POSITIVE_INT)),
    Rule("trainer.test_every_epoch", BOOLEAN),
    Rule("trainer.resume", RESUME_TARGET),
    Rule("trainer.resume_accept", Check(lambda v: isinstance(v, (list, ListConfig))
                                        and all(isinstance(k, str) for k in v), "a list of config keys")),
    Rule("trainer.checkpoint_every_n_steps", optional(POSITIVE_INT)),
    Rule("trainer.checkpoint_every_minutes", optional(POSITIVE)),
    Rule("trainer.sharpness", BOOLEAN),
    Rule("trainer.sharpness_samples", POSITIVE_INT),
    Rule("trainer.sharpness_batch_size", optional(POSITIVE_INT)),
    Rule("trainer.sharpness_top_k", POSITIVE_INT),
    Rule("trainer.sharpness_max_iter", POSITIVE_INT),
    Rule("trainer.sharpness_tol", NON_NEGATIVE),
    Rule("trainer.sharpness_params", PARAMETER_SELECTION),
    Rule("trainer.sharpness_aggregate", one_of("batch_mean", "subset")),
    Rule("trainer.sharpness_seed", NON_NEGATIVE_INT),
    Rule("trainer.sharpness_m_rho", NON_NEGATIVE),
    Rule("trainer.sharpness_m", POSITIVE_INT),
    Rule("trainer.sharpness_m_samples", POSITIVE_INT),
    Rule("trainer.sharpness_m_steps", POSITIVE_INT),
    Rule("trainer.sharpness_m_norm", one_of("adaptive", "l2")),
    Rule("trainer.sharpness_measures", MEASURE_LIST),
    Rule("trainer.sharpness_esd_iterations", POSITIVE_INT),
    Rule("trainer.sharpness_esd_vectors", POSITIVE_INT),
    Rule("trainer.sharpness_worst_rho", NON_NEGATIVE),
    Rule("trainer.sharpness_worst_norm", one_of("linf", "l2")),
    Rule("trainer.sharpness_worst_steps", POSITIVE_INT),
    Rule("trainer.sharpness_average_rho", NON_NEGATIVE),
    Rule("trainer.sharpness_average_norm", one_of("linf", "l2")),
    Rule("trainer.sharpness_average_draws", POSITIVE_INT),
    Rule("trainer.sharpness_adaptive", BOOLEAN),
    Rule("trainer.sharpness_normalize_logits", BOOLEAN),
    Rule("trainer.sharpness_landscape_x", GRID),
    Rule("trainer.sharpness_landscape_y", GRID),
    Rule("trainer.sharpness_landscape_norm", one_of(*LANDSCAPE_NORMS)),
    Rule("trainer.sharpness_landscape_ignore", one_of(*LANDSCAPE_IGNORES)),
    Rule("trainer.sharpness_landscape_kind", one_of("weights", "states")),
    Rule("trainer.sharpness_interpolate_to", optional(TEXT)),
    Rule("trainer.sharpness_interpolate_alpha", GRID),
    Rule("trainer.sharpness_interpolate_kind", one_of("weights", "states")),
    Rule("scheduler.name", one_of("cosine", "linear", "step", "constant")),
    Rule("scheduler.warmup_epochs", NON_NEGATIVE),
    Rule("scheduler.min_lr_factor", FRACTION),
    Rule("scheduler.step_size", Check(POSITIVE, "a number of epochs > 0")),
    Rule("scheduler.gamma", POSITIVE),
    Rule("scheduler.interval", one_of("step", "epoch")),
    Rule("scheduler.milestones", optional(Check(lambda v: isinstance(v, (list, ListConfig)) and all(
        is_number(f) and 0 < f < 1 for f in v), "a list of fractions of the run in (0, 1)"))),
    Rule("logger.wandb", optional(MAPPING)),
    Rule("logger.wandb.project", TEXT),
    Rule("logger.wandb.entity", optional(TEXT)),
    Rule("logger.wandb.mode", WANDB_MODE),
    Rule("logger.wandb.group", optional(TEXT)),
    Rule("logger.wandb.tags", list_of(TEXT, "a list of tags")),
    # tuning: set by the sweep=<protocol> options (flatmin/conf/tuning_common/base.yaml), read by
    # flatmin.tuning.apply_trial; tuning.space's entries are checked by flatmin.tuning.search_space
    Rule("tuning.protocol", one_of("algoperf", "crowded_valley")),
    Rule("tuning.phase", one_of("tune", "reseed", "oneshot")),
    Rule("tuning.trials", POSITIVE_INT),
    Rule("tuning.studies", POSITIVE_INT),
    Rule("tuning.reseeds", POSITIVE_INT),
    Rule("tuning.seed", NON_NEGATIVE_INT),
    Rule("tuning.study", optional(NON_NEGATIVE_INT)),
    Rule("tuning.trial", optional(NON_NEGATIVE_INT)),
    Rule("tuning.reseed", optional(NON_NEGATIVE_INT)),
    Rule("tuning.from", TUNING_SOURCE),
    Rule("tuning.space", MAPPING),
    Rule("tuning.point", MAPPING),
    Rule("tuning.target.metric", TEXT),
    Rule("tuning.target.value", optional(NUMBER)),
    Rule("tuning.workload", optional(TEXT)),
)


def check_split(cfg: DictConfig) -> None:
    """Held-out fractions of one split must leave training examples."""
    split = cfg.dataset.get("split") or {}
    held_out = (split.get("val_fraction") or 0) + (split.get("test_fraction") or 0)
    if held_out >= 1:
        raise ConfigError(f"dataset.split.val_fraction + dataset.split.test_fraction must be < 1 (got {held_out:g}): "
                          "they leave no training examples.")


def check_normalization(cfg: DictConfig) -> None:
    """``dataset.normalize`` has one mean and one std per input channel."""
    normalize, channels = cfg.dataset.get("normalize"), cfg.dataset.get("in_channels")
    if normalize is None or channels is None:
        return
    for key in ("mean", "std"):
        if len(normalize[key]) != channels:
            raise ConfigError(f"dataset.normalize.{key} must have one value per input channel: {channels} "
                              f"(dataset.in_channels), not {len(normalize[key])}.")


def check_budget(cfg: DictConfig) -> None:
    """One budget at a time: equal passes settle the epochs, equal seconds cut them short."""
    if cfg.trainer.get("budget_passes") is not None and cfg.trainer.get("budget_seconds") is not None:
        raise ConfigError("trainer.budget_passes and trainer.budget_seconds cannot both be set: a run has one "
                          "budget (set the other to null).")


def check_sharpness(cfg: DictConfig) -> None:
    """Each measure at most once; ``interpolation`` with an ``interpolate_to`` that exists."""
    measures = measure_names(cfg.trainer.get("sharpness_measures", "hessian"))
    repeated = [name for name in dict.fromkeys(measures) if measures.count(name) > 1]
    if repeated:
        raise ConfigError(f"trainer.sharpness_measures must name each measure at most once (got "
                          f"{','.join(measures)!r}: {repeated[0]} twice).")
    target = cfg.trainer.get("sharpness_interpolate_to")
    if "interpolation" in measures and target is None:
        raise ConfigError("trainer.sharpness_interpolate_to must be the run directory or checkpoint to interpolate "
                          "to when trainer.sharpness_measures has interpolation (got None).")
    if "interpolation" in measures and not Path(target).exists():
        raise ConfigError(f"No run directory or checkpoint at {target} (trainer.sharpness_interpolate_to).")


def check_trial(cfg: DictConfig) -> None:
    """A tuning job has a trial, and its study and trial lie within ``tuning.studies`` × ``tuning.trials``."""
    tuning = cfg.get("tuning") or {}
    if tuning.get("phase") == "tune" and tuning.get("protocol") is not None and tuning.get("trial") is None:
        raise ConfigError("tuning.trial must be set in the tuning phase (got None): it picks the job's draw.")
    for index, count in (("study", "studies"), ("trial", "trials")):
        if tuning.get(index) is not None and count in tuning and tuning[index] >= tuning[count]:
            raise ConfigError(f"tuning.{index} must be below tuning.{count}={tuning[count]} (got {tuning[index]}): "
                              f"the sweep has {count} 0 … {tuning[count] - 1}.")


def check_monitor(cfg: DictConfig) -> None:
    """``trainer.monitor`` must be a metric the run's validation produces (a typo would silently keep
    the last epoch); without a validation split it is not used."""
    prefixes = evaluation_prefixes(cfg.dataset)
    produced = [f"{prefix}/{name}" for prefix in prefixes for name in ("loss", *cfg.dataset.metrics)]
    if prefixes and cfg.trainer.monitor not in produced:
        raise ConfigError(f"trainer.monitor must be a metric this run's validation produces: one of "
                          f"{', '.join(produced)} (got {cfg.trainer.monitor!r}).")


def check_method_batch(cfg: DictConfig) -> None:
    """What the method needs of a micro-batch (its ``batch_requirements``: bSAM's equal sub-batches,
    ESAM's selected rows, RWP's halves) against ``dataset.batch_size``: the trainer steps on full
    micro-batches of that size (per replica under DDP), the last incomplete one of an epoch dropped."""
    settings = OmegaConf.to_container(cfg.optimizer, resolve=True)
    method, rows = METHODS.get(settings.get("method")), cfg.dataset.batch_size
    for requirement in method.batch_requirements if method else ():
        if (problem := requirement.problem(settings, rows)) is not None:
            raise ConfigError(f"dataset.batch_size={rows} does not suit optimizer {settings.get('name')!r}: {problem}.")


#: Config sections declared elsewhere: the optimizer's settings (flatmin.optim.settings and each
#: method's hyperparameters) and Hydra's own.
DECLARED_ELSEWHERE = ("optimizer", "hydra")


def undeclared_keys(container: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys of a resolved config (dotted) that no rule covers, outside ``DECLARED_ELSEWHERE``."""
    covered = {rule.key for rule in RULES}
    found = []
    for key, value in container.items():
        dotted = f"{prefix}{key}"
        if dotted in covered or dotted in DECLARED_ELSEWHERE:
            continue
        if isinstance(value, dict):
            found += undeclared_keys(value, f"{dotted}.")
        else:
            found.append(dotted)
    return found


def validate(cfg: DictConfig, prefix: str = "") -> None:
    """Check every value of ``cfg`` against ``RULES`` (only the keys starting with ``prefix``, when
    given), a key no rule declares included; raise ``ConfigError`` on the first bad one.

    The message is one sentence: the key, what it must be, and the value it got. Interpolations
    are resolved first, so ``${...}`` values are checked as the run will see them; one that does
    not resolve (``dataset=glue/sst2`` with an image model: no ``model.name_or_path`` for the
    tokenizer) is reported the same way.
    """
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        reason = str(error).splitlines()[0].rstrip(".")
        raise ConfigError(f"{error.full_key} could not be resolved ({reason}); choose config options that fit "
                          "together (e.g. model=bert for the GLUE datasets).") from error
    undeclared = [key for key in undeclared_keys(resolved) if key.startswith(prefix)]
    if undeclared:
        raise ConfigError(f"{undeclared[0]} is not a setting flatmin knows, so nothing would read it; check its "
                          "spelling (python train.py --cfg job lists the settings).")
    for rule in (rule for rule in RULES if rule.key.startswith(prefix)):
        try:
            value = OmegaConf.select(cfg, rule.key, default=_MISSING, throw_on_missing=False)
        except Exception as error:  # an interpolation that does not resolve
            raise ConfigError(f"{rule.key} could not be resolved: {error}") from error
        if value is _MISSING:
            continue
        if not rule.check(value):
            raise ConfigError(f"{rule.key} must be {rule.check.requirement} (got {value!r}).")
    if "tuning" in cfg and "tuning".startswith(prefix):
        check_trial(cfg)
    if "trainer" in cfg and ("trainer.sharpness_".startswith(prefix) or prefix.startswith("trainer.sharpness_")):
        check_sharpness(cfg)
    if not prefix and "trainer" in cfg and "dataset" in cfg:
        check_split(cfg)
        check_budget(cfg)
        check_monitor(cfg)
        check_normalization(cfg)
    if "optimizer" in cfg and (not prefix or prefix.startswith("optimizer")):
        check_optimizer_config(OmegaConf.to_container(cfg.optimizer, resolve=True))
        if "dataset" in cfg:
            check_method_batch(cfg)
