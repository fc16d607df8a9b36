"""``build_optimizer(cfg, model)``: param groups plus the method named in the ``optimizer`` config."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim import Optimizer

from flatmin.errors import ConfigError
from flatmin.optim.sam import SAM

BASE_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}

#: Each method: its class and the config keys passed to it as method hyperparameters.
METHODS: dict[str, tuple[type[Optimizer], tuple[str, ...]]] = {
    "sam": (SAM, ("rho", "adaptive", "eta")),
}


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict[str, Any]]:
    """Split the trainable parameters into groups by weight decay and ASAM adaptivity.

    Without ``decay_norm_and_bias`` the 1-D tensors (biases, norm weights) get no weight decay.
    ``adaptive`` follows the official ASAM code: a tensor is scaled by ``|θ|+eta`` only if its name
    contains ``weight``, so biases are exempt (Kwon et al., ICML 2021).
    """
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = weight_decay if decay_norm_and_bias or param.ndim > 1 else 0.0
        groups.setdefault((decay, "weight" in name), []).append(param)
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
    optimizer ``cfg.base``; either way the result follows the ``step(closure)`` contract.
    """
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)
    if cfg.name in BASE_OPTIMIZERS:
        return BASE_OPTIMIZERS[cfg.name](groups, **base_kwargs(cfg, cfg.name))
    if cfg.name not in METHODS:
        valid = ", ".join(sorted([*BASE_OPTIMIZERS, *METHODS]))
        raise ConfigError(f"optimizer.name must be one of {valid} (got {cfg.name!r}).")
    method, keys = METHODS[cfg.name]
    method_kwargs = {key: cfg[key] for key in keys}
    return method(groups, BASE_OPTIMIZERS[cfg.base], **method_kwargs, **base_kwargs(cfg, cfg.base))
