"""``build_optimizer(cfg, model)``: param groups plus the method named in the ``optimizer`` config."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim import Optimizer

from flatmin.errors import ConfigError
from flatmin.optim.gam import GAM
from flatmin.optim.lookahead import Lookahead
from flatmin.optim.nso import NSO
from flatmin.optim.sam import SAM
from flatmin.optim.schedules import HyperparameterSchedule
from flatmin.optim.tracer import TRACER

BASE_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}

#: Each method: its class and the config keys passed to it as method hyperparameters.
#: ASAM is SAM with ``adaptive: true``; SGD-/Adam-TRACER are TRACER over ``base: sgd``/``adam``.
METHODS: dict[str, tuple[type[Optimizer], tuple[str, ...]]] = {
    "sam": (SAM, ("rho", "adaptive", "eta")),
    "asam": (SAM, ("rho", "adaptive", "eta")),
    "gam": (GAM, ("rho", "rho_p", "alpha", "beta", "gamma", "variant")),
    "nso": (NSO, ("sigma", "num_perturbs", "two_sided", "lam", "distribution")),
    "sgd_tracer": (TRACER, ("rho", "lam", "beta2", "delta")),
    "adam_tracer": (TRACER, ("rho", "lam", "beta2", "delta")),
}


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool,
                 adaptive_tensors: str = "weights") -> list[dict[str, Any]]:
    """Split the trainable parameters into groups by weight decay and ASAM adaptivity.

    Without ``decay_norm_and_bias`` the 1-D tensors (biases, norm weights) get no weight decay.
    ``adaptive_tensors="weights"`` follows the official ASAM code: a tensor is scaled by ``|θ|+eta``
    only if its name contains ``weight``, so biases are exempt (Kwon et al., ICML 2021); ``"all"``
    scales every tensor, as the widely copied single-file ASAM does.
    """
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = weight_decay if decay_norm_and_bias or param.ndim > 1 else 0.0
        groups.setdefault((decay, adaptive_tensors == "all" or "weight" in name), []).append(param)
    return [{"params": params, "weight_decay": decay, "adaptive": adaptive}
            for (decay, adaptive), params in groups.items()]


def base_kwargs(cfg: DictConfig, base: str) -> dict[str, Any]:
    """The keyword arguments of the base optimizer ``base`` taken from the ``optimizer`` config."""
    if base == "sgd":
        return {"lr": cfg.lr, "momentum": cfg.momentum, "nesterov": cfg.nesterov}
    return {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps, "amsgrad": cfg.amsgrad}


def build_optimizer(cfg: DictConfig, model: nn.Module) -> Optimizer:
    """Build the optimizer of the ``optimizer`` config group for ``model``.

    ``cfg.name`` is a base optimizer (``sgd``, ``adam``, ``adamw``) or a method wrapping the base
    optimizer ``cfg.base``; with ``cfg.lookahead.enabled`` either is wrapped in Lookahead. The
    result follows the ``step(closure)`` contract.
    """
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias, cfg.get("adaptive_tensors", "weights"))
    if cfg.name in BASE_OPTIMIZERS:
        optimizer = BASE_OPTIMIZERS[cfg.name](groups, **base_kwargs(cfg, cfg.name))
    elif cfg.name in METHODS:
        method, keys = METHODS[cfg.name]
        method_kwargs = {key: cfg[key] for key in keys}
        optimizer = method(groups, BASE_OPTIMIZERS[cfg.base], **method_kwargs, **base_kwargs(cfg, cfg.base))
    else:
        valid = ", ".join(sorted([*BASE_OPTIMIZERS, *METHODS]))
        raise ConfigError(f"optimizer.name must be one of {valid} (got {cfg.name!r}).")
    lookahead = cfg.get("lookahead")
    if lookahead is not None and lookahead.enabled:
        optimizer = Lookahead(optimizer, k=lookahead.k, alpha=lookahead.alpha)
    return optimizer


def build_hyper_schedule(cfg: DictConfig, optimizer: Optimizer, total_steps: int) -> HyperparameterSchedule:
    """The schedule of ``cfg.schedules`` (absent or empty: nothing scheduled) over ``total_steps``
    optimizer steps. Only a method's numeric hyperparameters can be scheduled (``lr`` is the LR
    scheduler's); another key is a ``ConfigError`` (the kinds are checked with the other values)."""
    kinds = dict(cfg.get("schedules") or {})
    group = optimizer.param_groups[0]
    keys = METHODS[cfg.name][1] if cfg.name in METHODS else ()
    schedulable = [key for key in keys if key in group and not isinstance(group[key], bool)]
    for key, kind in kinds.items():
        if key not in schedulable:
            raise ConfigError(f"optimizer.schedules.{key} is not a hyperparameter of optimizer {cfg.name!r} "
                              f"that can be scheduled (those are: {', '.join(schedulable) or 'none'}).")
        if kind == "exp" and cfg[key] <= 0:
            raise ConfigError(f"optimizer.schedules.{key} is exp, which needs optimizer.{key} > 0 (got {cfg[key]!r}).")
    return HyperparameterSchedule(optimizer, kinds, total_steps)
