"""What an ``optimizer`` config may hold, declared once, and its checks, made before anything is built.

An ``optimizer`` config (``flatmin/conf/optimizer/<name>.yaml``) is the block every option shares
(``flatmin/conf/optimizer_common/base.yaml``, declared here as :data:`SHARED`: the base optimizer, the
param grouping, schedules, Lookahead, weight averaging) plus the method's own hyperparameters
(``method: <key>`` and what that method declares, ``flatmin/optim/hyper.py``).
:func:`check_optimizer_config` checks a config against both declarations, what the base optimizer
needs (:data:`BASE_REQUIREMENTS`: what torch's SGD would refuse) and the method's ``requirements``
(MSAM's base with a first moment), each in one sentence, without building an optimizer.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.optim import Optimizer

from flatmin.checks import (BETAS, BOOLEAN, FRACTION, MAPPING, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT,
                            UNIT_INTERVAL, Check, listing, one_of, optional)
from flatmin.errors import ConfigError
from flatmin.optim.hyper_schedule import KINDS
from flatmin.optim.hyper import Requirement
from flatmin.optim.lookahead import PROX
from flatmin.optim.multipass import METHODS

#: The base optimizers torch gives by name; any other ``optimizer.base`` is one ``timm.optim`` creates.
BASE_OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam,
                                               "adamw": torch.optim.AdamW}

SCHEDULE_KINDS = Check(lambda value: isinstance(value, Mapping) and all(isinstance(kind, str) and kind in KINDS
                                                                        for kind in value.values()),
                       f"a mapping from hyperparameters to {', '.join(KINDS)}")


@dataclass(frozen=True)
class Setting:
    """One setting every optimizer option shares: what it must be, and what it does."""

    check: Check
    doc: str


#: The shared block, key by key (nested keys dotted). ``method`` and ``base`` are checked against
#: what exists (the registered methods, torch's and timm's optimizers) by :func:`check_optimizer_config`.
SHARED: dict[str, Setting] = {
    "name": Setting(Check(lambda v: isinstance(v, str), "a string"), "the option's name, which reports label runs by"),
    "method": Setting(Check(lambda v: v is None or v in METHODS, "null or a registered method"),
                      "the flat-minima method (a registered class); null: the base optimizer alone"),
    "base": Setting(Check(lambda v: isinstance(v, str), "an optimizer's name"),
                    "sgd | adam | adamw (torch.optim) | any timm.optim name: lamb, lion, adan, ..."),
    "lr": Setting(POSITIVE, "the learning rate"),
    "momentum": Setting(FRACTION, "sgd's momentum (and timm's momentum optimizers')"),
    "nesterov": Setting(BOOLEAN, "sgd: Nesterov momentum"),
    "betas": Setting(BETAS, "adam, adamw: the decays of the two moments"),
    "eps": Setting(NON_NEGATIVE, "adam, adamw: added to the denominator"),
    "amsgrad": Setting(BOOLEAN, "adam, adamw: AMSGrad"),
    "base_kwargs": Setting(MAPPING, "a timm base's own arguments"),
    "weight_decay": Setting(NON_NEGATIVE, "the base optimizer's weight decay"),
    "decay_norm_and_bias": Setting(BOOLEAN, "false: no weight decay on biases and norm weights"),
    "perturb": Setting(one_of("all", "norm", "no_norm"), "what a method perturbs (norm: SAM-ON)"),
    "schedules": Setting(SCHEDULE_KINDS, "the method's hyperparameters set every step (optim/hyper_schedule.py)"),
    "schedule_interval": Setting(one_of("step", "epoch"), "how often the scheduled values move"),
    "rho_min": Setting(optional(NON_NEGATIVE), "rho at the LR schedule's end under schedules.rho=proportional_to_lr"),
    "lookahead.enabled": Setting(BOOLEAN, "Lookahead over this optimizer"),
    "lookahead.k": Setting(POSITIVE_INT, "base steps between slow-weight updates"),
    "lookahead.alpha": Setting(UNIT_INTERVAL, "slow <- slow + alpha * (fast - slow)"),
    "lookahead.prox": Setting(PROX, "RAPP's proximal term; 0: plain Lookahead"),
    "averaging.kind": Setting(one_of("none", "ema", "swa"), "weight averaging over this optimizer"),
    "averaging.decay": Setting(UNIT_INTERVAL, "ema: A <- decay * A + (1 - decay) * weights"),
    "averaging.start": Setting(NON_NEGATIVE_INT, "average after the steps (or epochs) past start"),
    "averaging.every": Setting(POSITIVE_INT, "average every `every` steps (or epochs)"),
    "averaging.interval": Setting(one_of("step", "epoch"), "the unit of start and every"),
    "averaging.swa_lr": Setting(optional(POSITIVE), "swa: SWALR's learning rate after start; null: none"),
    "averaging.anneal_epochs": Setting(NON_NEGATIVE_INT, "swa: SWALR's annealing epochs"),
    "averaging.anneal_strategy": Setting(one_of("cos", "linear"), "swa: SWALR's annealing"),
}
#: The top-level keys of the shared block (``lookahead`` and ``averaging`` hold the dotted ones).
SHARED_KEYS = frozenset(key.split(".")[0] for key in SHARED)
#: Shared settings whose keys are free: a timm base's arguments, the scheduled hyperparameters.
FREE_FORM = ("base_kwargs", "schedules")


def nesterov_without_momentum(settings: Mapping[str, Any]) -> str | None:
    """What torch's SGD refuses and no single setting's check sees (``torch/optim/sgd.py``)."""
    momentum = settings.get("momentum", 0)
    if settings.get("nesterov") and not momentum > 0:
        return f"Nesterov momentum requires a momentum > 0 (optimizer.momentum is {momentum})"
    return None


#: What each torch base optimizer needs of the shared settings, as a method's ``requirements``.
BASE_REQUIREMENTS: dict[str, tuple[Requirement, ...]] = {"sgd": (Requirement(nesterov_without_momentum),)}


@cache
def timm_optimizers() -> frozenset[str]:
    """The names ``timm.optim.create_optimizer_v2`` accepts (timm is imported only when asked)."""
    from timm.optim import list_optimizers

    return frozenset(list_optimizers())


def timm_arguments(base: str) -> frozenset[str]:
    """The keyword arguments timm's optimizer ``base`` takes (``optimizer.base_kwargs`` may set them)."""
    from timm.optim import get_optimizer_class

    return frozenset(inspect.signature(get_optimizer_class(base)).parameters) - {"params"}


def check_optimizer_config(cfg: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for a method or base that does not exist, a key neither shared nor
    declared by the method (written with ``+`` or not), a value its declaration rejects, a rule of
    the base optimizer or a requirement of the method that the settings break, or a ``rho_min`` that
    would have no effect or is out of range (:func:`check_rho_min`). Builds nothing."""
    cfg = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    name, method_key, base = cfg.get("name"), cfg.get("method"), cfg.get("base")
    if method_key is not None and method_key not in METHODS:
        raise ConfigError(f"optimizer.method must be null or one of {listing(METHODS)} (got {method_key!r}).")
    if base not in BASE_OPTIMIZERS and base not in timm_optimizers():
        raise ConfigError(f"optimizer.base must be one of {listing(BASE_OPTIMIZERS)} or an optimizer timm.optim "
                          f"creates ({listing(timm_optimizers() - set(BASE_OPTIMIZERS))}) (got {base!r}).")
    method = METHODS[method_key] if method_key else None
    declared = method.hyperparameters if method else {}
    known = {*SHARED, *SHARED_KEYS, *declared}
    unknown = sorted(key for key in flat_keys(cfg) if key not in known)
    if unknown:
        own = listing(declared) if declared else "none"
        raise ConfigError(f"optimizer.{unknown[0]} is not a setting of optimizer {name!r} (its method's "
                          f"settings: {own}; the shared ones: {listing(SHARED_KEYS)}).")
    for key, setting in SHARED.items():
        check_value(cfg, key, setting.check)
    for key, hyper in declared.items():
        check_value(cfg, key, hyper.check)
    problems = [problem for requirement in (method.requirements if method else ())
                if (problem := requirement.problem(cfg)) is not None]
    if not (method and method.full_optimizer):           # the base optimizer is used
        problems += [problem for requirement in BASE_REQUIREMENTS.get(base, ())
                     if (problem := requirement.problem(cfg)) is not None]
        given = sorted(cfg.get("base_kwargs") or {})
        if base in BASE_OPTIMIZERS and given:
            problems.append(f"optimizer.base_kwargs ({', '.join(given)}) is for a timm base; torch's {base} takes "
                            "its arguments from the shared settings (lr, momentum, betas, …)")
        elif base not in BASE_OPTIMIZERS:
            problems += [f"{base} takes no argument {key!r} (optimizer.base_kwargs)"
                         for key in sorted(set(given) - timm_arguments(base))]
    if problems:
        built = method_key if method and method.full_optimizer else f"{method_key or 'no method'} over {base}"
        raise ConfigError(f"optimizer {name!r} ({built}) refuses these settings: {problems[0]}.")
    check_rho_min(cfg)
    averaging = cfg.get("averaging") or {}
    if averaging.get("kind") == "ema" and averaging.get("decay") == 1:
        raise ConfigError("optimizer.averaging.decay=1 keeps the EMA at its first copy (the weights at its start), "
                          "which would then be evaluated as the average; use a decay below 1.")
    if averaging.get("swa_lr") is not None and averaging.get("kind") != "swa":
        raise ConfigError(f"optimizer.averaging.swa_lr ({averaging['swa_lr']!r}) is the SWA learning rate, and "
                          f"optimizer.averaging.kind is {averaging.get('kind')!r}; set kind=swa or swa_lr=null.")


def flat_keys(cfg: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every key of ``cfg``, a nested mapping's dotted (``lookahead.k``), free-form ones whole."""
    keys = []
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        nested = isinstance(value, Mapping) and key not in FREE_FORM and not prefix
        keys += flat_keys(value, name + ".") if nested else [name]
    return keys


def check_value(cfg: Mapping[str, Any], key: str, check: Check) -> None:
    """``optimizer.<key>`` (dotted for a nested one) against ``check``, when the config has it."""
    value: Any = cfg
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return
        value = value[part]
    if not check(value):
        raise ConfigError(f"optimizer.{key} must be {check.requirement} (got {value!r}).")


def check_rho_min(cfg: Mapping[str, Any]) -> float:
    """``cfg.rho_min`` (0 when absent), or a :class:`ConfigError` if it would have no effect (rho not
    scheduled ``proportional_to_lr``), is negative, or exceeds ``rho`` (GSAM's release asserts
    ``rho_max >= rho_min``, juntang-zhuang/GSAM@a770275 ``gsam/scheduler.py``)."""
    rho_min = cfg.get("rho_min", 0.0)
    rho_min = 0.0 if rho_min is None else rho_min
    kind = (cfg.get("schedules") or {}).get("rho")
    if kind == "proportional_to_lr":
        if not NON_NEGATIVE(rho_min):
            raise ConfigError(f"optimizer.rho_min must be {NON_NEGATIVE.requirement} (got {rho_min!r}).")
        rho = cfg.get("rho")
        if rho is not None and rho_min > rho:
            raise ConfigError(f"optimizer.rho_min ({rho_min!r}) must not exceed optimizer.rho ({rho!r}), "
                              "its value at the initial learning rate.")
    elif rho_min != 0:
        raise ConfigError(f"optimizer.rho_min ({rho_min!r}) is where optimizer.schedules.rho=proportional_to_lr "
                          f"ends, and optimizer {cfg.get('name')!r} does not schedule rho so "
                          f"(schedules.rho: {kind or 'none'}); set rho_min to 0 or schedule rho proportional_to_lr.")
    return rho_min
