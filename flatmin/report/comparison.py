"""The comparison of methods the report makes with ``--target`` or a tuning ``--protocol``: each method's
time to target on each workload in each unit, under the protocol's selection rule (``protocols.py``),
then AlgoPerf's aggregation of those times (``profiles.py``: the performance profiles, their scores,
the geometric-mean speedup over a baseline).

A workload's target is the one given for it (``--target WORKLOAD:METRIC=VALUE``), else the one given
for all (``--target METRIC=VALUE``), else the one every run of it records (``tuning.target``). A method
without runs on a workload never reaches its target there (∞), and is listed with the runs that did
not complete and the trials absent from their sweep. The budget a never-reached time is charged in the
speedup is the largest reading any run of the workload logged (mlcommons/algorithmic-efficiency,
``scoring/compute_speedups.py`` 41-55, with its budgets measured here instead of the first
competition's).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from flatmin import rundir
from flatmin.report.profiles import Profiles, geometric_mean_speedup, performance_profiles, profile_scores
from flatmin.report.protocols import (ALGOPERF, CROWDED_VALLEY, CrowdedValley, Trial, algoperf_scores,
                                      crowded_valley, seed_medians, seed_times, trials_of, workload_of)
from flatmin.report.runs import ReportError, Run
from flatmin.report.targets import READING

PROTOCOLS = ("seeds", ALGOPERF, CROWDED_VALLEY)
ONE_SHOT = " (one-shot)"


@dataclass(frozen=True)
class WorkloadTarget:
    """A workload's target: ``metric`` reaching ``value``, given on the command line or recorded."""

    metric: str
    value: float
    given: bool


@dataclass(frozen=True)
class Member:
    """One seed behind a time: the time, and its run (AlgoPerf: the study's fastest trial, None when no
    trial reached the target)."""

    seed: Any
    time: float
    run: Run | None


@dataclass(frozen=True)
class Cell:
    """A method on a workload in one unit: the time compared (a median over the members), its members, and
    (AlgoPerf) the trials absent from the sweep."""

    time: float
    members: tuple[Member, ...]
    missing: tuple[tuple[int, int], ...] = ()   # AlgoPerf: the (study, trial) pairs absent from the sweep

    @property
    def reached(self) -> int:
        return sum(math.isfinite(member.time) for member in self.members)


@dataclass
class Comparison:
    """``cells``, ``times``, ``budgets``, ``profiles``, ``scores`` and ``speedups`` by unit compared, then
    ``[method][workload]``."""

    protocol: str
    units: tuple[str, ...]
    r_max: float
    runs: list[Run]                                   # every run taking part, completed or not
    targets: dict[str, WorkloadTarget]
    cells: dict[str, dict[str, dict[str, Cell]]]
    baseline: str
    trials: list[Trial] = field(default_factory=list)
    selections: dict[tuple[str, str], CrowdedValley] = field(default_factory=dict)
    times: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    budgets: dict[str, dict[str, float]] = field(default_factory=dict)
    profiles: dict[str, Profiles] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    speedups: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return sorted({method for by_method in self.cells.values() for method in by_method})

    @property
    def workloads(self) -> list[str]:
        return sorted(self.targets)

    def curve_cells(self, unit: str) -> dict[str, dict[str, Cell]]:
        """The cells whose runs a learning curve against ``unit`` averages: ``unit``'s, else the first unit
        compared's (only AlgoPerf's fastest trials depend on the unit)."""
        return self.cells.get(unit, self.cells[self.units[0]])

    def timed(self) -> list[Run]:
        """The runs whose times are compared (Crowded Valley: the reseed and one-shot runs, not the tuning
        trials), completed or not."""
        if self.protocol != CROWDED_VALLEY:
            return self.runs
        return [trial.run for selection in self.selections.values() for trial in (*selection.reseeds,
                                                                                  *selection.oneshot)]

    def missing(self) -> list[tuple[str, str]]:
        """The (method, workload) pairs without runs (the same in every unit)."""
        cells = self.cells[self.units[0]]
        return [(method, workload) for method in self.methods for workload in self.workloads
                if workload not in cells.get(method, {})]


def workload_targets(runs: Iterable[Run],
                     given: Mapping[str | None, tuple[str, float]]) -> dict[str, WorkloadTarget]:
    """Each workload's target: ``given[workload]``, else ``given[None]``, else the one all its runs
    record in ``tuning.target``; a workload without one, or a given one for a workload no run has, is
    a :class:`ReportError`."""
    recorded: dict[str, set[tuple[Any, Any]]] = defaultdict(set)
    for run in runs:
        recorded[workload_of(run.config)].add((run.config.get("tuning.target.metric"),
                                               run.config.get("tuning.target.value")))
    unknown = sorted(workload for workload in given if workload is not None and workload not in recorded)
    if unknown:
        raise ReportError(f"--target names workload {unknown[0]}, which no run has (the workloads: "
                          f"{', '.join(sorted(recorded))}).")
    targets = {}
    for workload, records in sorted(recorded.items()):
        if workload in given or None in given:
            targets[workload] = WorkloadTarget(*given[workload if workload in given else None], given=True)
        elif len(records) == 1 and None not in (record := next(iter(records))):
            targets[workload] = WorkloadTarget(str(record[0]), float(record[1]), given=False)
        else:
            found = "different ones" if len(records) > 1 else "none"
            raise ReportError(f"Workload {workload} has no target: its runs record {found} in tuning.target; give "
                              f"--target {workload}:METRIC=VALUE.")
    return targets


def compare(runs: Sequence[Run], protocol: str, given: Mapping[str | None, tuple[str, float]],
            units: Sequence[str], baseline: str | None = None, r_max: float = 4.0) -> Comparison:
    """Times to target of the runs under ``protocol`` in each of ``units``, and their aggregation.
    Bad input (no trials of the protocol, a workload without a target, an unknown ``baseline``, two runs
    for one trial) is a :class:`ReportError`."""
    trials = [trial for trial in trials_of(runs) if trial.protocol == protocol]
    taking_part = [run for run in runs if run.config] if protocol == "seeds" else [trial.run for trial in trials]
    if not taking_part:
        what = "run with a config.yaml" if protocol == "seeds" else f"trial of --protocol {protocol}"
        raise ReportError(f"There is no {what} under the paths given.")
    targets = workload_targets(taking_part, given)
    selections = crowded_valley(trials) if protocol == CROWDED_VALLEY else {}
    cells = {unit: _cells(protocol, taking_part, trials, selections, targets, unit) for unit in units}
    methods = sorted({method for by_method in cells.values() for method in by_method})
    if not methods:   # Crowded Valley's tuning trials alone: nothing is timed
        raise ReportError("The crowded_valley trials under the paths hold no reseed or one-shot run, so no time to "
                          "compare: run sweep=crowded_valley_reseed with tuning.from=<the tuning sweep>.")
    if baseline is not None and baseline not in methods:
        raise ReportError(f"--baseline {baseline} is none of the methods compared ({', '.join(methods)}).")
    chosen = baseline or ("sgd" if "sgd" in methods else methods[0])
    comparison = Comparison(protocol, tuple(units), r_max, taking_part, targets, cells, chosen, trials, selections)
    for unit in units:
        times = {method: {workload: cells[unit].get(method, {}).get(workload, Cell(math.inf, ())).time
                          for workload in targets} for method in methods}
        budgets = {workload: _budget(taking_part, times, workload, unit) for workload in targets}
        comparison.times[unit], comparison.budgets[unit] = times, budgets
        try:
            comparison.profiles[unit] = performance_profiles(times, r_max=r_max)
        except ValueError as error:   # a time of 0: records without the reading (train_time_s, epoch_time_s)
            raise ReportError(f"The times in {unit} cannot be compared: {error}.") from error
        comparison.scores[unit] = profile_scores(comparison.profiles[unit])
        comparison.speedups[unit] = {method: geometric_mean_speedup(times, method, chosen, budgets)
                                     for method in methods}
    return comparison


def _cells(protocol: str, runs: Sequence[Run], trials: Sequence[Trial],
           selections: Mapping[tuple[str, str], CrowdedValley], targets: Mapping[str, WorkloadTarget],
           unit: str) -> dict[str, dict[str, Cell]]:
    """``cells[method][workload]`` in ``unit`` under ``protocol``."""
    cells: dict[str, dict[str, Cell]] = defaultdict(dict)
    by_path = {trial.path: trial for trial in trials}
    study_seeds = {(trial.method, trial.workload, trial.study): trial.seed for trial in trials}
    for workload, target in targets.items():
        if protocol == ALGOPERF:
            scores = algoperf_scores([trial for trial in trials if trial.workload == workload], target.metric,
                                     target.value, unit=unit)
            for (method, _), score in scores.items():
                cells[method][workload] = Cell(score.score, tuple(
                    Member(study_seeds.get((method, workload, study)), time,
                           by_path[score.best[study]].run if score.best[study] else None)
                    for study, time in score.studies.items()), score.missing)
        elif protocol == CROWDED_VALLEY:
            for (method, where), selection in selections.items():
                for name, phase in ((method, selection.reseeds), (method + ONE_SHOT, selection.oneshot)):
                    if where == workload and phase:
                        times = seed_times([trial.run for trial in phase], target.metric, target.value, unit=unit)
                        cells[name][workload] = Cell(times.median, tuple(
                            Member(trial.seed, time, trial.run) for trial, time in zip(phase, times.times)))
        else:
            medians = seed_medians([run for run in runs if workload_of(run.config) == workload], target.metric,
                                   target.value, unit=unit)
            for (label, _), times in medians.items():
                cells[label][workload] = Cell(times.median, tuple(
                    Member(run.config.get("seed"), time, run) for run, time in zip(times.runs, times.times)))
    return dict(cells)


def _budget(runs: Sequence[Run], times: Mapping[str, Mapping[str, float]], workload: str, unit: str) -> float:
    """The largest ``unit`` reading any run of ``workload`` logged (0 when none did), and at least its
    largest finite time (records written before ``passes`` and ``train_time_s`` carry none)."""
    readings = [float(record[READING[unit]]) for run in runs if workload_of(run.config) == workload
                for record in run.epoch_records() if READING[unit] in record]
    finite = [row[workload] for row in times.values() if math.isfinite(row[workload])]
    return max([0.0, *readings, *finite])


def devices(comparison: Comparison) -> list[str]:
    """The kinds of machine the runs taking part name in their ``summary.json``: the device's model
    (``device_name``), else, for runs that did not record it, the device without its index (``cuda``)."""
    return sorted({str(run.summary.get(rundir.DEVICE_NAME) or run.summary[rundir.DEVICE]).split(":")[0]
                   for run in comparison.runs if run.summary.get(rundir.DEVICE_NAME) or run.summary.get(rundir.DEVICE)})
