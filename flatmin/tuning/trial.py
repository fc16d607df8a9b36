"""One job of a tuning sweep: its point and its seed, set on the config before the run validates it.

The ``sweep=<protocol>`` options (``flatmin/conf/sweep/``) give every job a ``tuning`` block:

- AlgoPerf's external tuning ruleset (``protocol: algoperf``): job (study j, trial i) takes point
  ``draw_trials(space, N, S, tuning.seed)[j][i]`` and seed ``seed + j``, the trials of a study
  sharing one seed as AlgoPerf's runner gives each study one ``rng_seed``
  (mlcommons/algorithmic-efficiency, ``submission_runner.py``);
- Crowded Valley (Schmidt, Schneider & Hennig, ICML 2021; ``protocol: crowded_valley``): the
  ``tune`` phase's trial i takes ``draw_trials(space, N, 1, tuning.seed)[0][i]`` at ``seed``; a
  ``reseed`` job k takes the best point of its method and workload in the tuning sweep
  ``tuning.from`` (:func:`flatmin.report.protocols.crowded_valley`) at seed ``seed + k``; a
  ``oneshot`` job k keeps the method's defaults at seed ``seed + k``.

The run records the point and the effective search space, nested like the config, as
``tuning.point`` and ``tuning.space`` in its ``config.yaml``; a resumed job recomputes the same point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from flatmin.errors import ConfigError
from flatmin.optim.registry import method_label
from flatmin.report.protocols import ALGOPERF, CROWDED_VALLEY, RESEED, TUNE, crowded_valley, read_trials, workload_of
from flatmin.rundir import flatten
from flatmin.tuning.halton import draw_trials
from flatmin.tuning.space import search_space
from flatmin.validation import validate


def apply_trial(cfg: DictConfig) -> dict[str, Any] | None:
    """Set this tuning job's point and seed on ``cfg`` and record them; the point, flat (``{"optimizer.lr":
    …}``), or None for a config that is no tuning job. Bad ``tuning`` values: :class:`ConfigError`."""
    if OmegaConf.select(cfg, "tuning.protocol", default=None) is None:
        return None
    validate(cfg, prefix="tuning")
    tuning = cfg.tuning
    if tuning.get("point") is not None:
        raise ConfigError("tuning.point is recorded by the run (the point its sweep gives it), not set; "
                          "to run one point, set its values (optimizer.lr=…) without a sweep option.")
    space = search_space(cfg)
    if tuning.phase == TUNE:
        studies = tuning.studies if tuning.protocol == ALGOPERF else 1
        study = tuning.study if tuning.protocol == ALGOPERF else 0
        point = draw_trials(space, tuning.trials, studies, tuning.seed)[study][tuning.trial]
        offset = study
    else:
        point = selected_point(cfg, tuning["from"]) if tuning.phase == RESEED else {}
        offset = tuning.reseed if tuning.reseed is not None else 0
    for key, value in point.items():
        OmegaConf.update(cfg, key, value, merge=False)
    with open_dict(cfg):
        cfg.seed = cfg.seed + offset
        cfg.tuning.point = nested(point)
        cfg.tuning.space = nested(space)
    return point


def selected_point(cfg: DictConfig, source: str | None) -> dict[str, Any]:
    """The best point of this job's method and workload in the tuning sweep under ``source``
    (Crowded Valley's ranking by the final epoch's validation value)."""
    if source is None or not Path(source).is_dir():
        raise ConfigError(f"tuning.phase=reseed takes the best point of the tuning sweep in tuning.from, which must "
                          f"be its directory (got {source!r}).")
    container = OmegaConf.to_container(cfg, resolve=True)
    method = method_label(container["optimizer"])
    workload = workload_of(flatten(container, separator="."))
    selection = crowded_valley([trial for trial in read_trials([Path(source)]) if trial.protocol == CROWDED_VALLEY])
    chosen = selection.get((method, workload))
    if chosen is None or chosen.best is None:
        raise ConfigError(f"tuning.from={source} holds no completed tuning trial of {method} on {workload}; "
                          "give the directory of this method's sweep=crowded_valley run.")
    return dict(chosen.best.point)


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"optimizer.lr": 0.1}`` → ``{"optimizer": {"lr": 0.1}}``."""
    tree = OmegaConf.create({})
    for key, value in flat.items():
        OmegaConf.update(tree, key, value, force_add=True)
    return OmegaConf.to_container(tree)
