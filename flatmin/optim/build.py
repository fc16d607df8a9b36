"""``build_optimizer(cfg, model)``: param groups, the base optimizer, and the method over it, from the
``optimizer`` config (what it may hold and its checks: ``flatmin/optim/settings.py``), and
``build_hyper_schedule``, the schedule of the method's hyperparameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer

from flatmin.errors import ConfigError
from flatmin.optim.averaging import WeightAveraging
from flatmin.optim.hyper import AROUND_TENFOLD, Search
from flatmin.optim.hyper_schedule import HyperparameterSchedule
from flatmin.optim.lookahead import Lookahead
from flatmin.optim.multipass import METHODS
from flatmin.optim.registry import option_config
from flatmin.optim.settings import BASE_OPTIMIZERS, check_optimizer_config, check_rho_min

#: What a tuning protocol draws of every base optimizer (a method adds its radius: ``Hyper.search``).
BASE_SEARCH: dict[str, Search] = {"lr": AROUND_TENFOLD}
#: Layers whose parameters are "normalization parameters" for ``perturb: norm | no_norm`` (SAM-ON).
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
#: What a config's ``num_data: null`` (bSAM: the training split's size) stands for when
#: :func:`build_optimizer` is given no ``train_size``: a build that trains on no dataset (a
#: benchmark on a fixed batch, a test). CIFAR-10's 50,000 training images.
TRAIN_SIZE_WITHOUT_DATASET = 50_000


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool,
                 adaptive_tensors: str = "weights", perturb_tensors: str = "all") -> list[dict[str, Any]]:
    """Split the trainable parameters into groups by weight decay, ASAM adaptivity and perturbation.

    Without ``decay_norm_and_bias`` the 1-D tensors (biases, norm weights) get no weight decay.
    ``adaptive_tensors="weights"`` follows the official ASAM code: a tensor is scaled by ``|θ|+eta``
    only if its name contains ``weight``, so biases are exempt (Kwon et al., ICML 2021); ``"all"``
    scales every tensor, as the widely copied single-file ASAM does. ``perturb_tensors``: ``all``,
    ``norm`` (SAM-ON, Mueller et al., NeurIPS 2023: only the parameters of normalization layers are
    perturbed) or ``no_norm`` (all but those); the others get ``perturb=False`` and are still
    stepped. Normalization layers are found by type (:data:`NORM_LAYERS`); the SAM-ON release
    selects by name (``norm`` or ``bn`` in it), which agrees on the usual ResNets, WRNs and ViTs.
    """
    norm_params = {id(p) for module in model.modules() if isinstance(module, NORM_LAYERS)
                   for p in module.parameters(recurse=False)}
    groups: dict[tuple[float, bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = weight_decay if decay_norm_and_bias or param.ndim > 1 else 0.0
        adaptive = adaptive_tensors == "all" or "weight" in name
        perturb = perturb_tensors == "all" or (id(param) in norm_params) == (perturb_tensors == "norm")
        groups.setdefault((decay, adaptive, perturb), []).append(param)
    return [{"params": params, "weight_decay": decay, "adaptive": adaptive, "perturb": perturb}
            for (decay, adaptive, perturb), params in groups.items()]


def base_kwargs(cfg: Mapping[str, Any], base: str) -> dict[str, Any]:
    """The keyword arguments of torch's ``base`` optimizer taken from the ``optimizer`` config."""
    if base == "sgd":
        return {"lr": cfg["lr"], "momentum": cfg["momentum"], "nesterov": cfg["nesterov"]}
    return {"lr": cfg["lr"], "betas": tuple(cfg["betas"]), "eps": cfg["eps"], "amsgrad": cfg["amsgrad"]}


def build_base(cfg: Mapping[str, Any], groups: list[dict[str, Any]]) -> Optimizer:
    """The base optimizer on ``groups``: torch's SGD, Adam or AdamW with the config's arguments, or
    any optimizer ``timm.optim`` creates by name (with ``lr``, ``weight_decay``, ``momentum`` and
    ``base_kwargs``, its own arguments; timm's defaults for the rest)."""
    base = cfg["base"]
    if base in BASE_OPTIMIZERS:
        return BASE_OPTIMIZERS[base](groups, **base_kwargs(cfg, base))
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(groups, opt=base, lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                               momentum=cfg["momentum"], **dict(cfg.get("base_kwargs") or {}))


def build_optimizer(cfg: str | DictConfig | Mapping[str, Any], model: nn.Module,
                    train_size: int | None = None, steps_per_epoch: int | None = None, *,
                    config_dirs: Sequence[str | Path] = (), **overrides: Any) -> Optimizer:
    """Build the optimizer of the ``optimizer`` config group for ``model``.

    ``cfg`` is an option's name (``"sam"``: :func:`~flatmin.optim.registry.option_config`, looked up
    in ``config_dirs`` first) or its settings; ``overrides`` (``lr=0.05, rho=0.1``) are merged over
    them before anything is checked.

    ``cfg.method`` is null (the base optimizer alone) or a registered method wrapping the base
    optimizer ``cfg.base``, or a full optimizer (``full_optimizer``: bSAM) built on the param groups
    with its own hyperparameters; with ``cfg.lookahead.enabled`` either is wrapped in Lookahead, and
    with ``cfg.averaging.kind`` ema or swa the whole is wrapped in :class:`WeightAveraging` (the
    outermost wrapper; it averages the model's buffers too, EMA). The result follows the
    ``step(closure)`` contract. A value the base optimizer or the method refuses is a
    :class:`ConfigError` naming it. ``train_size``, the training split's size, is what a method's
    ``num_data: null`` stands for (without it, :data:`TRAIN_SIZE_WITHOUT_DATASET`);
    ``steps_per_epoch`` converts ``averaging.interval: epoch`` into steps (without it, a build that
    trains on no dataset, an epoch counts as one step).
    """
    if isinstance(cfg, str):
        cfg = option_config(cfg, config_dirs)
    if overrides:
        cfg = OmegaConf.merge(cfg, overrides)
    check_optimizer_config(cfg)
    method = METHODS.get(cfg.get("method"))
    grouping = {key: cfg[key] for key, hyper in (method.hyperparameters if method else {}).items()
                if hyper.grouping and key in cfg}
    groups = param_groups(model, cfg["weight_decay"], cfg["decay_norm_and_bias"],
                          perturb_tensors=cfg.get("perturb", "all"), **grouping)
    full = method is not None and method.full_optimizer
    try:
        if method is not None:
            kwargs = {key: cfg[key] for key, hyper in method.hyperparameters.items()
                      if key in cfg and not hyper.grouping}
            if "num_data" in method.hyperparameters and kwargs.get("num_data") is None:
                kwargs["num_data"] = TRAIN_SIZE_WITHOUT_DATASET if train_size is None else train_size
        optimizer = method(groups, **kwargs) if full else build_base(cfg, groups)
        if method is not None and not full:
            optimizer = method(None, optimizer, **kwargs)
    except ValueError as error:
        built = cfg.get("method") if full else f"{cfg.get('method') or 'no method'} over {cfg['base']}"
        raise ConfigError(f"optimizer {cfg.get('name')!r} ({built}) refuses these settings: {error}.") from error
    lookahead = cfg.get("lookahead")
    if lookahead is not None and lookahead["enabled"]:
        optimizer = Lookahead(optimizer, k=lookahead["k"], alpha=lookahead["alpha"], prox=lookahead.get("prox", 0.0))
    averaging = cfg.get("averaging")
    if averaging is not None and averaging["kind"] != "none":
        start, every = averaging_steps(averaging, steps_per_epoch)
        try:
            optimizer = WeightAveraging(optimizer, kind=averaging["kind"], decay=averaging["decay"], start=start,
                                        every=every, buffers=model.buffers())
        except ValueError as error:
            raise ConfigError(f"optimizer.averaging refuses these settings: {error}.") from error
    return optimizer


def averaging_steps(averaging: Mapping[str, Any], steps_per_epoch: int | None) -> tuple[int, int]:
    """``averaging.start`` and ``averaging.every`` in base steps: as given with ``interval: step``,
    times ``steps_per_epoch`` with ``interval: epoch`` (1 when not given: a build without a dataset)."""
    factor = (steps_per_epoch or 1) if averaging.get("interval", "step") == "epoch" else 1
    return averaging["start"] * factor, averaging["every"] * factor


def build_hyper_schedule(cfg: DictConfig, optimizer: Optimizer, total_steps: int,
                         final_lr_factor: float = 0.0, steps_per_epoch: int | None = None) -> HyperparameterSchedule:
    """The schedule of ``cfg.schedules`` (absent or empty: nothing scheduled) over ``total_steps``
    optimizer steps. Only the hyperparameters the method declares schedulable can be scheduled
    (``lr`` is the LR scheduler's); another key is a ``ConfigError``. With
    ``cfg.schedule_interval: epoch`` the values move once per epoch of ``steps_per_epoch`` steps.

    ``rho: proportional_to_lr`` goes from ``cfg.rho`` at the initial LR to ``cfg.rho_min`` (a
    shared key, 0 by default: GSAM's rho_min) at the LR the schedule ends at, ``final_lr_factor``
    times the initial one (the trainer passes its LR schedule's; 0 when not told). A ``rho_min``
    that would have no effect (rho not scheduled so), is negative, or exceeds ``rho`` (GSAM's
    release asserts rho_max >= rho_min) is a ``ConfigError``."""
    kinds = dict(cfg.get("schedules") or {})
    method = METHODS.get(cfg.get("method"))
    schedulable = [key for key, hyper in (method.hyperparameters if method else {}).items() if hyper.schedulable]
    for key, kind in kinds.items():
        if key not in schedulable:
            raise ConfigError(f"optimizer.schedules.{key} is not a hyperparameter of optimizer {cfg.name!r} "
                              f"that can be scheduled (those are: {', '.join(schedulable) or 'none'}).")
        if kind == "exp" and cfg[key] <= 0:
            raise ConfigError(f"optimizer.schedules.{key} is exp, which needs optimizer.{key} > 0 (got {cfg[key]!r}).")
    rho_min = check_rho_min(cfg)
    floors = {"rho": rho_min} if rho_min else {}
    per_epoch = steps_per_epoch if cfg.get("schedule_interval", "step") == "epoch" else None
    return HyperparameterSchedule(optimizer, kinds, total_steps, floors, final_lr_factor, per_epoch)
