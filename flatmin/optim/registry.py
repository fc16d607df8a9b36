"""The config options (``flatmin/conf/optimizer/<name>.yaml``) and the registered methods they use, and the
name a run is reported under.

A method class registers itself in ``METHODS`` by subclassing ``MultiPassOptimizer`` with a key
(``class GSAM(MultiPassOptimizer, key="gsam")``); ``flatmin/optim/__init__.py`` imports every
module of the package, so a new method file is found without being listed anywhere. A config
option names its method with ``method: <key>`` (``null`` for a base optimizer alone). From the two
comes :func:`method_label`: the option whose method, structural settings and ``perturb`` a run has
(SAM with ``adaptive: true`` is ``asam``). ``method_table.py`` derives the README's table from both.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from flatmin.errors import ConfigError
from flatmin.optim.multipass import METHODS

#: The packaged config groups (``flatmin/conf/``), read through ``importlib.resources`` so that an
#: installed flatmin needs no source tree; and the block every optimizer option starts from.
PACKAGED_CONF = files("flatmin.conf")
COMMON_BLOCK = PACKAGED_CONF / "optimizer_common" / "base.yaml"


def _group_folders(group: str, config_dirs: Sequence[str | Path]) -> list[Traversable]:
    """Where a group's options are looked up: each user folder (``--config-dir``), then the package."""
    return [*(Path(folder) / group for folder in config_dirs), PACKAGED_CONF / group]


def _option_files(group: str, config_dirs: Sequence[str | Path]) -> dict[str, Traversable]:
    """Each option of ``group`` by name, a user folder's taking precedence over a packaged one."""
    found: dict[str, Traversable] = {}
    for folder in reversed(_group_folders(group, config_dirs)):
        if folder.is_dir():
            found |= {entry.name.removesuffix(".yaml"): entry for entry in folder.iterdir()
                      if entry.name.endswith(".yaml")}
    return found


def option_names(config_dirs: Sequence[str | Path] = ()) -> list[str]:
    """The optimizer options: the packaged ones and those in ``<config dir>/optimizer/``."""
    return sorted(_option_files("optimizer", config_dirs))


@cache
def options() -> dict[str, dict[str, Any]]:
    """Each packaged option's own settings (its YAML without the shared blocks), by option name."""
    return {name: _own_settings(path) for name, path in sorted(_option_files("optimizer", ()).items())}


def _own_settings(path: Traversable) -> dict[str, Any]:
    own = OmegaConf.to_container(OmegaConf.create(path.read_text()))
    own.pop("defaults", None)
    return own


def _compose(group: str, name: str, config_dirs: Sequence[str | Path]) -> DictConfig:
    """One option of a group as Hydra composes it, for the defaults the options use: entries
    ``/<group>/<option>@_here_`` merged in their order, and ``_self_`` (last when not listed)."""
    available = _option_files(group, config_dirs)
    if name not in available:
        raise ConfigError(f"{group}={name} is not an option: one of {', '.join(sorted(available))}.")
    own = OmegaConf.create(available[name].read_text())
    defaults = list(own.pop("defaults", None) or [])
    if "_self_" not in defaults:
        defaults.append("_self_")
    composed = OmegaConf.create()
    for entry in defaults:
        if entry == "_self_":
            composed = OmegaConf.merge(composed, own)
            continue
        target, _, package = str(entry).partition("@")
        if package != "_here_" or not target.startswith("/") or target.count("/") != 2:
            raise ConfigError(f"{group}/{name}.yaml: a default {entry!r} the library cannot compose; write "
                              "/<group>/<option>@_here_ (as the packaged options do).")
        composed = OmegaConf.merge(composed, _compose(*target[1:].split("/"), config_dirs))
    return composed


def option_config(option: str, config_dirs: Sequence[str | Path] = ()) -> DictConfig:
    """An optimizer option as ``optimizer=<option>`` composes it (the shared block, then its own
    settings), looked up in ``config_dirs`` (folders laid out as ``flatmin/conf/``) before the package;
    for code that builds an optimizer without composing a whole run config."""
    return _compose("optimizer", option, config_dirs)


def structural_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The method, what it perturbs, whether Lookahead with a proximal term (RAPP) wraps it, and the
    values of its structural hyperparameters (defaults where unset)."""
    method = settings.get("method")
    declared = METHODS[method].hyperparameters if method in METHODS else {}
    return {"method": method, "perturb": settings.get("perturb", "all"), "proximal": proximal_lookahead(settings),
            **{name: settings.get(name, hyper.default) for name, hyper in declared.items() if hyper.structural}}


def proximal_lookahead(settings: Mapping[str, Any]) -> bool:
    """Whether the settings wrap the optimizer in Lookahead with ``prox`` (RAPP: ``flatmin/conf/optimizer/rapp.yaml``)."""
    lookahead = settings.get("lookahead") or {}
    return bool(lookahead.get("enabled")) and lookahead.get("prox", 0.0) != 0


def method_label(settings: Mapping[str, Any]) -> str:
    """The name a run's ``optimizer`` settings are reported under: the base optimizer's name for a
    base optimizer alone (not wrapped in RAPP's proximal Lookahead); otherwise the config option with
    the same method and structural settings, preferring one with the same base optimizer, and among
    those the run's own ``name``; else ``name``."""
    name = settings.get("name")
    if "method" not in settings and name in options():    # a run made before options named their method
        settings = {**settings, "method": options()[name].get("method")}
    if not settings.get("method") and not proximal_lookahead(settings):
        return str(settings.get("base", name))
    wanted = structural_settings(settings)
    matches = [option for option, own in options().items() if structural_settings(own) == wanted]
    same_base = [option for option in matches if options()[option].get("base", "sgd") == settings.get("base")]
    for candidates in (same_base, matches):
        if candidates:
            return str(name) if name in candidates else candidates[0]
    return str(name)
