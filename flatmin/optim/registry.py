"""The config options (``conf/optimizer/<name>.yaml``) and the registered methods they use, and the
name a run is reported under.

A method class registers itself in ``METHODS`` by subclassing ``MultiPassOptimizer`` with a key
(``class GSAM(MultiPassOptimizer, key="gsam")``); ``flatmin/optim/__init__.py`` imports every
module of the package, so a new method file is found without being listed anywhere. A config
option names its method with ``method: <key>`` (``null`` for a base optimizer alone). From the two
comes :func:`method_label`: the option whose method, structural settings and ``perturb`` a run has
(SAM with ``adaptive: true`` is ``asam``). ``method_table.py`` derives the README's table from both.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from flatmin.optim.multipass import METHODS

#: Where the config options live (the source tree's ``conf/``), and the block they all start from.
OPTIONS_DIR = Path(__file__).resolve().parents[2] / "conf" / "optimizer"
COMMON_BLOCK = OPTIONS_DIR.parent / "optimizer_common" / "base.yaml"


@cache
def options() -> dict[str, dict[str, Any]]:
    """Each config option's own settings (its YAML without the shared blocks), by option name."""
    return {path.stem: OmegaConf.to_container(OmegaConf.load(path)) for path in sorted(OPTIONS_DIR.glob("*.yaml"))}


def option_config(option: str) -> DictConfig:
    """A config option as Hydra composes it on its own: the shared block, then its own settings
    (for scripts that build an optimizer without composing a whole run config)."""
    own = OmegaConf.load(OPTIONS_DIR / f"{option}.yaml")
    own.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.load(COMMON_BLOCK), own)


def structural_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The method, what it perturbs, whether Lookahead with a proximal term (RAPP) wraps it, and the
    values of its structural hyperparameters (defaults where unset)."""
    method = settings.get("method")
    declared = METHODS[method].hyperparameters if method in METHODS else {}
    return {"method": method, "perturb": settings.get("perturb", "all"), "proximal": proximal_lookahead(settings),
            **{name: settings.get(name, hyper.default) for name, hyper in declared.items() if hyper.structural}}


def proximal_lookahead(settings: Mapping[str, Any]) -> bool:
    """Whether the settings wrap the optimizer in Lookahead with ``prox`` (RAPP: ``conf/optimizer/rapp.yaml``)."""
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
