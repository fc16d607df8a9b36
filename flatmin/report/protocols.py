"""Selection rules over run directories: which runs a method's time to target on a workload comes from,
under AlgoPerf's external tuning ruleset, over seeds, or under Crowded Valley's tune-then-reseed.

- AlgoPerf (mlcommons/algorithmic-efficiency @ 2c90454f): S studies of N trials; a study's score is
  its fastest trial's time to target, the method's the median over studies, ∞ taking part
  (``docs/DOCUMENTATION.md`` 408-423; ``scoring/performance_profile.py`` 251-266). Flatmin's fastest
  trial is the one of smallest *time*, as DOCUMENTATION.md 415 and 421 state; the code takes the one
  whose first evaluation at the target has the smallest *index* (performance_profile.py 170-172).
  The two agree when the trials evaluate at the same readings (epochs), not in seconds.
- Seeds (AlgoPerf's self-tuning form): the median over a configuration's seeds.
- Crowded Valley (Schmidt, Schneider & Hennig, ICML 2021): the tuning trials ranked by their final
  epoch's validation value, as DeepOBS's ``create_setting_analyzer_ranking(mode="final",
  metric="valid_accuracies")`` ranks them (fsschneider/DeepOBS, ``deepobs/analyzer/shared_utils.py``),
  the best re-run on new seeds and summarised beside the method's defaults run on as many seeds
  (SirRob1997/Crowded-Valley---Results: tuning seed 42, reseeds 43-52). Unlike DeepOBS's
  ``aggregate_runs``, which averages every run of the setting's folder, the tuning trial itself is
  not among the reseeds summarised.

A run that did not complete, and a trial absent from its sweep, never reaches the target (∞) and is
listed, never dropped. A run refused before it started (a ``summary.json`` and no ``config.yaml``)
names no protocol, method or workload, so it is no trial: the report lists it with the runs not
included.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from flatmin import rundir
from flatmin.checks import is_number
from flatmin.report.runs import ReportError, Run, find_runs
from flatmin.report.stats import Summary, summarise
from flatmin.report.tables import Group, configurations, label_groups
from flatmin.report.targets import time_to_target

ALGOPERF, CROWDED_VALLEY = "algoperf", "crowded_valley"
TUNE, RESEED, ONESHOT = "tune", "reseed", "oneshot"
#: A trial's drawn (or selected) values, nested like the config under this key of config.yaml.
POINT = "tuning.point."
#: A target: one value for every workload, or a value per workload.
Target = float | Mapping[str, float]


def workload_of(config: Mapping[str, Any]) -> str:
    """A run's workload, from its flattened config (``Run.config``): ``tuning.workload`` when set, else
    ``<dataset.name>/<class name of model._target_>``."""
    if config.get("tuning.workload"):
        return str(config["tuning.workload"])
    return f"{config.get('dataset.name')}/{str(config.get('model._target_', '')).rsplit('.', 1)[-1]}"


@dataclass(frozen=True)
class Trial:
    """A run of a tuning sweep, as its ``config.yaml`` places it: ``study`` and ``trial`` in the tuning
    phase, ``reseed`` in the reseed and one-shot phases; ``point`` is flat (``{"optimizer.lr": …}``, ``{}``
    for a one-shot run's defaults); ``target`` as recorded (``{"metric": …, "value": … or None}``)."""

    path: Path
    method: str
    workload: str
    protocol: str
    phase: str
    study: int | None
    trial: int | None
    reseed: int | None
    seed: int | None
    status: str
    point: dict[str, Any]
    trials: int
    studies: int
    target: dict[str, Any]
    run: Run


def trial_of(run: Run) -> Trial | None:
    """The trial ``run`` is, or None when its config names no ``tuning.protocol``."""
    config = run.config
    if config.get("tuning.protocol") is None:
        return None
    return Trial(path=run.path, method=str(run.facets["method"]), workload=workload_of(config),
                 protocol=config["tuning.protocol"], phase=config.get("tuning.phase", TUNE),
                 study=config.get("tuning.study"), trial=config.get("tuning.trial"),
                 reseed=config.get("tuning.reseed"), seed=config.get("seed"), status=run.status,
                 point={key.removeprefix(POINT): value for key, value in config.items() if key.startswith(POINT)},
                 trials=config.get("tuning.trials") or 1, studies=config.get("tuning.studies") or 1,
                 target={"metric": config.get("tuning.target.metric"), "value": config.get("tuning.target.value")},
                 run=run)


def trials_of(runs: Iterable[Run]) -> list[Trial]:
    """The runs that are tuning trials, in order."""
    return [trial for trial in map(trial_of, runs) if trial is not None]


def read_trials(paths: Iterable[Path]) -> list[Trial]:
    """Every run directory under ``paths`` with a ``tuning.protocol``, sorted by path."""
    return trials_of(find_runs(paths))


def target_value(target: Target, workload: str) -> float:
    """The target of ``workload``: ``target`` itself, or its entry for the workload."""
    if isinstance(target, Mapping):
        if workload not in target:
            raise ValueError(f"workload {workload!r} has no target")
        return float(target[workload])
    return float(target)


def by_setting(trials: Iterable[Trial], protocol: str) -> dict[tuple[str, str], list[Trial]]:
    """The trials of ``protocol`` by (method, workload), sorted."""
    found: dict[tuple[str, str], list[Trial]] = defaultdict(list)
    for trial in trials:
        if trial.protocol == protocol:
            found[(trial.method, trial.workload)].append(trial)
    return dict(sorted(found.items()))


def placed(trials: Iterable[Trial], place: Callable[[Trial], tuple], names: str) -> dict[tuple, Trial]:
    """The trials by their ``place`` in the sweep (``names`` says what it is); two runs in one place
    are a :class:`ReportError`, since which one counts would be a guess."""
    found: dict[tuple, Trial] = {}
    for trial in trials:
        key = place(trial)
        if key in found:
            where = ", ".join(map(str, (trial.method, trial.workload, *key)))
            raise ReportError(f"Two runs for one (method, workload, {names}) = ({where}): {found[key].path} and "
                              f"{trial.path}; give the report one of them.")
        found[key] = trial
    return dict(sorted(found.items(), key=lambda item: tuple(-1 if part is None else part for part in item[0])))


# -- AlgoPerf's external tuning ruleset -----------------------------------------------------------
@dataclass(frozen=True)
class StudyScores:
    """A method's AlgoPerf score on a workload: each study's time (its fastest trial's; ∞: none reached)
    and that trial (None when ∞), the median over studies, and the (study, trial) pairs absent."""

    studies: dict[int, float]
    best: dict[int, Path | None]
    score: float
    missing: tuple[tuple[int, int], ...]


def algoperf_scores(trials: Iterable[Trial], metric: str, target: Target, mode: str = "auto",
                    unit: str = "seconds") -> dict[tuple[str, str], StudyScores]:
    """For each (method, workload) of the ``algoperf`` trials: s_j = min_i t_ij over study j's trials
    (ties: the lower trial index), an absent trial counting ∞; score = ``numpy.median`` of the s_j, an
    even number of studies averaging the middle two (performance_profile.py 251-266). The studies and
    trials expected are the largest recorded ``studies`` × ``trials``."""
    scores = {}
    for (method, workload), members in by_setting(trials, ALGOPERF).items():
        sweep = placed(members, lambda trial: (trial.study, trial.trial), "study, trial")
        value = target_value(target, workload)
        studies, best, missing = {}, {}, []
        for study in range(max(trial.studies for trial in members)):
            studies[study], best[study] = math.inf, None
            for index in range(max(trial.trials for trial in members)):
                trial = sweep.get((study, index))
                if trial is None:
                    missing.append((study, index))
                    continue
                time = time_to_target(trial.path, metric, value, mode, unit)
                if time < studies[study]:
                    studies[study], best[study] = time, trial.path
        scores[(method, workload)] = StudyScores(studies, best, float(np.median(list(studies.values()))),
                                                 tuple(missing))
    return scores


# -- Seeds ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedTimes:
    """Each run's time to target (∞: never reached, or the run did not complete) and their median."""

    runs: tuple[Run, ...]
    times: tuple[float, ...]
    median: float

    @property
    def reached(self) -> int:
        return sum(math.isfinite(time) for time in self.times)


def seed_times(runs: Sequence[Run], metric: str, target: float, mode: str = "auto",
               unit: str = "seconds") -> SeedTimes:
    """``numpy.median`` over ``runs`` (a configuration's seeds) of their time to target."""
    times = tuple(time_to_target(run.path, metric, target, mode, unit) for run in runs)
    return SeedTimes(tuple(runs), times, float(np.median(times)))


def config_facets(run: Run) -> dict[str, Any]:
    """A run's settings and method, read from its config alone: the same whatever its status (a run that
    did not complete records no Hydra choices)."""
    return {**run.settings, "method": run.facets["method"]}


class Configuration(Group):
    """Runs, completed or not, that differ only by seed: named by :func:`config_facets`."""

    @property
    def facets(self) -> dict[str, Any]:
        return config_facets(self.runs[0])


def seed_groups(runs: Iterable[Run]) -> dict[tuple[str, str], list[Run]]:
    """The runs with a config, completed or not, by (configuration, workload): a configuration is the
    runs that differ only by seed, named by its method plus the settings that set it apart from the
    method's other configurations on that workload."""
    by_workload: dict[str, list[Group]] = defaultdict(list)
    for members in configurations((run for run in runs if run.config), config_facets):
        by_workload[workload_of(members[0].config)].append(Configuration(members))
    found = {}
    for workload, groups in sorted(by_workload.items()):
        label_groups(groups, ("method",))
        found |= {(group.label, workload): group.runs for group in groups}
    return found


def seed_medians(runs: Iterable[Run], metric: str, target: Target, mode: str = "auto",
                 unit: str = "seconds") -> dict[tuple[str, str], SeedTimes]:
    """For each configuration and workload (:func:`seed_groups`): the median over its seeds of the time
    to target."""
    return {(label, workload): seed_times(members, metric, target_value(target, workload), mode, unit)
            for (label, workload), members in seed_groups(runs).items()}


# -- Crowded Valley -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CrowdedValley:
    """A method on a workload under Crowded Valley: the tuning trials best first (``best``: the first,
    when it has a value), the reseed and one-shot runs by reseed, those of them that ``failed`` (did not
    complete, or have no test value), and the test value of the others over seeds."""

    best: Trial | None
    ranking: tuple[Trial, ...]
    reseeds: tuple[Trial, ...]
    oneshot: tuple[Trial, ...]
    failed: tuple[Trial, ...]
    tuned: Summary | None
    default: Summary | None


def monitored(run: Run, metric: str | None = None) -> str:
    """``metric``, or the run's ``trainer.monitor``."""
    return metric or str(run.config.get("trainer.monitor"))


def final_value(run: Run, metric: str) -> float | None:
    """The final epoch's validation value (``summary["final"][metric]``) of a completed run, else None."""
    value = (run.summary.get(rundir.FINAL) or {}).get(metric)
    return value if run.status == rundir.COMPLETED and is_number(value) else None


def final_test_value(run: Run, metric: str) -> float | None:
    """The final model's test value of ``metric`` (``test/<its name>``) of a completed run, else None."""
    tests = (run.summary.get(rundir.TEST) or {}).get(rundir.TEST_OF_LAST) or {}
    value = tests.get("test/" + metric.rsplit("/", 1)[-1])
    return value if run.status == rundir.COMPLETED and is_number(value) else None


def crowded_valley(trials: Iterable[Trial], metric: str | None = None,
                   mode: str = "auto") -> dict[tuple[str, str], CrowdedValley]:
    """For each (method, workload) of the ``crowded_valley`` trials: the ``tune`` trials ranked best
    first by ``summary["final"][metric]`` (default: the trial's ``trainer.monitor``; ``mode`` as for
    :func:`~flatmin.report.targets.time_to_target`), ties in trial order, those not completed or without
    a finite value last in trial order; the ``reseed`` and ``oneshot`` runs' test values summarised
    (:func:`~flatmin.report.stats.summarise`), each failed one named in ``failed``."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be auto, min or max (got {mode!r}).")
    found = {}
    for key, members in by_setting(trials, CROWDED_VALLEY).items():
        name = monitored(members[0].run, metric)
        sign = 1 if rundir.monitor_mode(name, mode) == "min" else -1
        tune = list(placed((t for t in members if t.phase == TUNE), lambda t: (t.trial,), "trial").values())
        valued = [trial for trial in tune if final_value(trial.run, name) is not None]
        ranking = (*sorted(valued, key=lambda trial: sign * final_value(trial.run, name)),   # stable: ties in order
                   *(trial for trial in tune if final_value(trial.run, name) is None))
        reseeds, oneshot = (tuple(placed((t for t in members if t.phase == phase), lambda t: (t.reseed,),
                                         f"{phase} phase, reseed").values()) for phase in (RESEED, ONESHOT))
        failed = tuple(trial for trial in reseeds + oneshot if final_test_value(trial.run, name) is None)
        found[key] = CrowdedValley(ranking[0] if valued else None, ranking, reseeds, oneshot, failed,
                                   summarise_tests(reseeds, name), summarise_tests(oneshot, name))
    return found


def summarise_tests(trials: Sequence[Trial], metric: str) -> Summary | None:
    """The test value of ``metric`` over the ``trials`` that have one (None when none has)."""
    values = [value for value in (final_test_value(trial.run, metric) for trial in trials) if value is not None]
    return summarise(values) if values else None
