"""The search space of a config: what a tuning protocol draws, and where (``docs/optimizers.md``,
"Search spaces").

Declared once per hyperparameter: the base optimizer's (``flatmin.optim.build.BASE_SEARCH``: the
learning rate), then the method's own in declaration order (``Hyper.search``: its radius), then the
entries of ``tuning.space`` not already there, in config order. ``tuning.space`` is nested like the
config (``+tuning.space.optimizer.momentum={min:0.8,max:0.99,scaling:linear}``): an entry for a key
already there replaces it in place, ``null`` removes it (``+tuning.space.optimizer.rho=null``). Each
range comes out in AlgoPerf's forms (``{"min", "max", "scaling"}`` or ``{"feasible_points": [...]}``),
``around`` resolved at the configured value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flatmin.errors import ConfigError
from flatmin.optim.build import BASE_SEARCH
from flatmin.optim.hyper import Search
from flatmin.optim.multipass import METHODS

#: The keys of a range (a leaf of ``tuning.space``).
FORM_KEYS = {"min", "max", "scaling", "feasible_points", "around"}


def search_space(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """``{config path: AlgoPerf form}`` for ``cfg`` (composed with Hydra's compose API or by a run);
    a bad ``tuning.space`` entry, or an empty space, is a :class:`ConfigError` naming the key."""
    optimizer = cfg["optimizer"]
    method = METHODS.get(optimizer.get("method"))
    declared = {f"optimizer.{key}": search for key, search in BASE_SEARCH.items()}
    declared |= {f"optimizer.{key}": hyper.search for key, hyper in (method.hyperparameters if method else {}).items()
                 if hyper.search is not None}
    space = {key: resolved(cfg, key, search) for key, search in declared.items()}
    given = OmegaConf.select(cfg, "tuning.space", default=None)
    for key, entry in leaves(OmegaConf.to_container(given, resolve=True) if given is not None else {}):
        if entry is None:
            space.pop(key, None)
            continue
        if OmegaConf.select(cfg, key, default=None) is None:
            raise ConfigError(f"tuning.space.{key} names no key of the config, so no run would use it.")
        search = Search(**{name: tuple(value) if name == "feasible_points" else value
                           for name, value in entry.items()}) if is_range(entry) else None
        problem = "a range: {min, max, scaling}, {feasible_points} or {around}" if search is None else search.problem()
        if problem:
            raise ConfigError(f"tuning.space.{key} must be {problem} (got {entry!r}).")
        space[key] = resolved(cfg, key, search)
    if not space:
        raise ConfigError("the search space is empty: tuning.space removed every hyperparameter; leave one.")
    return space


def resolved(cfg: DictConfig, key: str, search: Search) -> dict[str, Any]:
    """``search`` in AlgoPerf's form at ``key``'s configured value."""
    try:
        return search.form(OmegaConf.select(cfg, key, default=None))
    except ValueError as error:
        raise ConfigError(f"{key}: {error}; give tuning.space.{key} a min and max instead.") from error


def is_range(entry: Any) -> bool:
    return isinstance(entry, Mapping) and set(entry) <= FORM_KEYS


def leaves(node: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """The ranges of a nested ``tuning.space``, as (config path, range or None), in config order."""
    found = []
    for name, value in node.items():
        path = f"{prefix}{name}"
        if isinstance(value, Mapping) and not is_range(value):
            found += leaves(value, path + ".")
        else:
            found.append((path, value))
    return found
