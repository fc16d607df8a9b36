"""The registered methods, the config options that use them, and what is derived from both.

A method class registers itself by subclassing ``MultiPassOptimizer`` with a key
(``class GSAM(MultiPassOptimizer, key="gsam")``); ``flatmin/optim/__init__.py`` imports every
module of the package, so a new method file is found without being listed anywhere. A config
option ``conf/optimizer/<name>.yaml`` names its method with ``method: <key>`` (``null`` for a base
optimizer alone). From the two come:

* :func:`method_label`: the name a run is reported under (the option whose method, structural
  settings and ``perturb`` the run has: SAM with ``adaptive: true`` is ``asam``);
* :func:`method_table`: the README's method table (``python -m flatmin.optim`` prints it).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from flatmin.optim.multipass import MultiPassOptimizer

#: key → method class, filled as the method modules are imported.
METHODS: dict[str, type[MultiPassOptimizer]] = {}
#: Where the config options live (the source tree's ``conf/``), and the block they all start from.
OPTIONS_DIR = Path(__file__).resolve().parents[2] / "conf" / "optimizer"
COMMON_BLOCK = OPTIONS_DIR.parent / "optimizer_common" / "base.yaml"


def register(key: str, cls: type[MultiPassOptimizer]) -> None:
    if key in METHODS and METHODS[key] is not cls:
        raise ValueError(f"two methods registered as {key!r}: {METHODS[key].__name__} and {cls.__name__}")
    METHODS[key] = cls


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


def method_table() -> str:
    """The README's method table: the base optimizers, each registered method (with the options
    that use it) and the wrappers (Lookahead, weight averaging), from their declarations."""
    using: dict[str, list[str]] = {}
    for option, own in options().items():
        using.setdefault("lookahead" if proximal_lookahead(own) else own.get("method") or "", []).append(option)
    rows = ["| method | `optimizer=` | passes per step | extra buffers | source |", "|---|---|---|---|---|",
            f"| SGD, Adam, AdamW (or any timm optimizer as `optimizer.base`) | "
            f"{', '.join(f'`{o}`' for o in using.get('', []))} | 1 | 0 | — |"]
    for key, cls in sorted(METHODS.items(), key=lambda item: item[1].card.title):
        card = cls.card
        names = ", ".join(f"`{o}`" for o in using.get(key, [])) or f"(`method: {key}`)"
        rows.append(f"| {card.title} | {names} | {card.passes} | {card.buffers} | {card.source} |")
    from flatmin.optim.lookahead import Lookahead

    card = Lookahead.card
    proximal = "".join(f", `{option}`" for option in using.get("lookahead", []))
    rows.append(f"| {card.title} | `optimizer.lookahead.enabled=true` over any of them{proximal} | {card.passes} | "
                f"{card.buffers} | {card.source} |")
    from flatmin.optim.averaging import WeightAveraging

    card = WeightAveraging.card
    rows.append(f"| {card.title} | `optimizer.averaging.kind=ema` or `=swa` over any of them (outermost) | "
                f"{card.passes} | {card.buffers} | {card.source} |")
    return "\n".join(rows)
