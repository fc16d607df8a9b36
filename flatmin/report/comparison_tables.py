"""The comparison of methods (``comparison.py``) laid out in text tables: the targets; the times to
target per method × workload in each unit (AlgoPerf: with each study's time, fastest trial and its
point); Crowded Valley's selection and its tuned against one-shot test values; the performance-profile
scores; the speedups over the baseline; paired differences against the baseline by seed; and what
counted as never reaching the target.
"""

from __future__ import annotations

import math
from functools import partial
from operator import attrgetter
from typing import Any, Callable, Mapping

from flatmin import rundir
from flatmin.checks import is_number
from flatmin.report.comparison import ONE_SHOT, Cell, Comparison, Member
from flatmin.report.protocols import ALGOPERF, CROWDED_VALLEY, final_test_value, final_value, monitored
from flatmin.report.published import Metric
from flatmin.report.render import ours_text
from flatmin.report.stats import paired_differences
from flatmin.report.tables import TextTable

#: What a time of each protocol is, for the tables' notes.
AGGREGATES = {
    "seeds": "the median over a configuration's seeds of each run's time (n: runs)",
    ALGOPERF: "AlgoPerf's score: the median over studies of each study's fastest trial's time (n: studies)",
    CROWDED_VALLEY: "the median over the reseeds of the best tuning trial's point (method), or over the runs "
                    f"at the method's defaults (method{ONE_SHOT}) (n: runs)",
}
NEVER = "Runs that did not complete, trials absent from their sweep and methods without runs on a workload never " \
        "reach its target (∞)."
#: Test values (accuracies, losses) shown with four significant digits.
VALUE = Metric("", ("test",), digits=None)
TIME = attrgetter("time")


def number(value: float) -> str:
    """A time or value for reading: four significant digits, ∞ for never."""
    return "∞" if value == math.inf else f"{value:.4g}"


def point_text(point: Mapping[str, Any]) -> str:
    """``optimizer.lr=0.0316, optimizer.rho=0.0871``; ``defaults`` for none."""
    return ", ".join(f"{key}={number(value) if is_number(value) else value}" for key, value in point.items()) \
        or "defaults"


def comparison_tables(comparison: Comparison) -> list[TextTable]:
    """Every table of the comparison, in reading order."""
    tables = [targets_table(comparison)]
    for unit in comparison.units:
        tables.append(times_table(comparison, unit))
        if comparison.protocol == ALGOPERF:
            tables.append(studies_table(comparison, unit))
    if comparison.protocol == CROWDED_VALLEY:
        tables += [selection_table(comparison), tuned_table(comparison)]
    tables += [scores_table(comparison), speedups_table(comparison), paired_table(comparison)]
    never = never_table(comparison)
    return tables + ([never] if never.rows else [])


def targets_table(comparison: Comparison) -> TextTable:
    rows = [[workload, target.metric, number(target.value), "--target" if target.given else "tuning.target"]
            for workload, target in comparison.targets.items()]
    return TextTable("Targets", ["workload", "metric", "target", "from"], rows,
                     (f"Protocol {comparison.protocol}: a time is {AGGREGATES[comparison.protocol]}.", NEVER))


def times_table(comparison: Comparison, unit: str) -> TextTable:
    """Method × workload: the time and how many of its members reached the target."""
    cells = comparison.cells[unit]

    def text(cell: Cell | None) -> str:
        return "no runs (∞)" if cell is None else f"{number(cell.time)} ({cell.reached}/{len(cell.members)} reached)"

    rows = [[method, *(text(cells.get(method, {}).get(workload)) for workload in comparison.workloads)]
            for method in comparison.methods]
    return TextTable(f"Time to target in {unit}", ["method", *comparison.workloads], rows)


def studies_table(comparison: Comparison, unit: str) -> TextTable:
    """AlgoPerf: each study's time, its fastest trial and that trial's point."""
    trials = {trial.path: trial for trial in comparison.trials}
    rows = []
    for method, by_workload in sorted(comparison.cells[unit].items()):
        for workload, cell in sorted(by_workload.items()):
            for study, member in enumerate(cell.members):
                trial = trials[member.run.path] if member.run else None
                rows.append([method, workload, str(study), str(member.seed), number(member.time),
                             "none reached" if trial is None else str(trial.trial),
                             "" if trial is None else point_text(trial.point)])
    return TextTable(f"AlgoPerf studies in {unit}", ["method", "workload", "study", "seed", "time", "fastest trial",
                                                     "its point"], rows,
                     ("A study's time is its fastest trial's (ties: the lower trial); flatmin picks the smallest "
                      "time, as AlgoPerf's DOCUMENTATION.md 415/421 states, where its performance_profile.py "
                      "170-172 picks the first evaluation index.",))


def selection_table(comparison: Comparison) -> TextTable:
    """Crowded Valley: the best tuning trial of each method and workload, by its final validation value."""
    rows = []
    for (method, workload), selection in comparison.selections.items():
        best, ranking = selection.best, selection.ranking
        completed = sum(trial.status == rundir.COMPLETED for trial in ranking)
        if best is None:
            rows.append([method, workload, "none", "", "", f"{completed}/{len(ranking)}"])
            continue
        metric = monitored(best.run)
        rows.append([method, workload, str(best.trial), point_text(best.point),
                     f"{metric} = {number(final_value(best.run, metric))}", f"{completed}/{len(ranking)}"])
    return TextTable("Crowded Valley: the tuning trials' best", ["method", "workload", "best trial", "its point",
                                                               "final epoch's validation value",
                                                               "trials completed"], rows,
                     ("Tuning trials ranked by their final epoch's validation value (trainer.monitor), as DeepOBS's "
                      "create_setting_analyzer_ranking(mode=\"final\"); ties keep trial order.",))


def tuned_table(comparison: Comparison) -> TextTable:
    """Crowded Valley: the final model's test value at the best point (reseeds) and at the defaults."""
    rows = []
    for (method, workload), selection in comparison.selections.items():
        failed = ", ".join(f"{trial.path} ({trial.status})" for trial in selection.failed)
        rows.append([method, workload, ours_text(selection.tuned, VALUE) or "no runs",
                     ours_text(selection.default, VALUE) or "no runs", failed or "none"])
    return TextTable("Crowded Valley: tuned against one-shot, final model's test value",
                     ["method", "workload", "tuned (reseeds)", "one-shot (defaults)", "failed runs"], rows,
                     ("Cells: mean ± std [95% Student-t interval] (n = runs), of the test value of the monitored "
                      "metric (test/<its name>); the tuning trial itself is not among the reseeds.",))


def scores_table(comparison: Comparison) -> TextTable:
    return per_unit_table(comparison, f"Performance-profile score (r_max = {comparison.r_max:g})",
                          comparison.scores, "{:.4f}",
                          "The integral of ρ(τ) over τ in [1, r_max] divided by r_max − 1: 1 for the fastest method "
                          "on every workload (AlgoPerf's scoring/score_submissions.py).")


def speedups_table(comparison: Comparison) -> TextTable:
    return per_unit_table(comparison, f"Speedup over {comparison.baseline}", comparison.speedups, "{:.4g}",
                          f"The geometric mean over workloads of {comparison.baseline}'s time / the method's (> 1: "
                          "faster); a time never reached counts as the workload's budget + 1, the budget being the "
                          "largest reading any of its runs logged (AlgoPerf's DOCUMENTATION.md 537).")


def per_unit_table(comparison: Comparison, title: str, values: Mapping[str, Mapping[str, float]], form: str,
                   note: str) -> TextTable:
    """Method × unit compared: ``values[unit][method]`` in ``form``."""
    rows = [[method, *(form.format(values[unit][method]) for unit in comparison.units)]
            for method in comparison.methods]
    return TextTable(title, ["method", *comparison.units], rows, (note,))


def paired_table(comparison: Comparison) -> TextTable:
    """Each method against the baseline on the seeds both ran: the final model's test value (of the
    target's metric) and, where every run reached the target, the times."""
    rows = []
    baseline = comparison.baseline
    for workload in comparison.workloads:
        name = "test/" + comparison.targets[workload].metric.rsplit("/", 1)[-1]
        test = partial(member_test_value, metric=name)
        for method in (method for method in comparison.methods if method != baseline):
            for index, unit in enumerate(comparison.units):
                cells = comparison.cells[unit]
                cell, base = cells.get(method, {}).get(workload), cells.get(baseline, {}).get(workload)
                if cell is None or base is None:
                    continue
                if comparison.protocol == ALGOPERF or index == 0:   # only AlgoPerf's runs depend on the unit
                    quantity = f"{name}, fastest trials in {unit}" if comparison.protocol == ALGOPERF else name
                    rows.append([method, workload, quantity, *paired_cells(by_seed(cell, test), by_seed(base, test))])
                reached = all(math.isfinite(member.time) for member in (*cell.members, *base.members))
                rows.append([method, workload, f"time in {unit}",
                             *(paired_cells(by_seed(cell, TIME), by_seed(base, TIME)) if reached else
                               ["", "not paired: not every run reached the target", "", ""])])
    return TextTable(f"Paired differences against {baseline} by seed",
                     ["method", "workload", "quantity", "pairs", "method − baseline: mean ± std [95% interval]",
                      "Wilcoxon p", "unpaired seeds"], rows,
                     ("Pairs: the seeds both ran (AlgoPerf: a study's seed, its fastest trial); paired t-interval of "
                      "the differences and the two-sided Wilcoxon signed-rank test (scipy).",))


def member_test_value(member: Member, metric: str) -> float | None:
    """The final model's test value of ``metric`` of the member's run (None without one)."""
    return final_test_value(member.run, metric) if member.run else None


def by_seed(cell: Cell, value: Callable[[Member], float | None]) -> dict[Any, float] | None:
    """``value`` of each member that has one, by seed; None when two members share a seed."""
    seeds = [member.seed for member in cell.members]
    if len(set(seeds)) < len(seeds):
        return None
    return {member.seed: found for member in cell.members if (found := value(member)) is not None}


def paired_cells(a: dict[Any, float] | None, b: dict[Any, float] | None) -> list[str]:
    """Pairs, the differences' mean ± std [interval], the Wilcoxon p-value and the unpaired seeds."""
    if a is None or b is None:
        return ["", "not paired: two runs share a seed", "", ""]
    if not a.keys() & b.keys():
        return ["0", "no seed in common", "", ""]
    paired = paired_differences(a, b)
    spread = "" if paired.std is None else f" ± {paired.std:.4g} [{paired.ci_low:+.4g}, {paired.ci_high:+.4g}]"
    return [str(paired.n), f"{paired.mean:+.4g}{spread}", f"{paired.wilcoxon_p:.3g}",
            ", ".join(map(str, paired.unpaired)) or "none"]


def never_table(comparison: Comparison) -> TextTable:
    """The runs that did not complete, the trials absent from their sweep, the methods without runs."""
    rows = [[str(run.path), run.status, run.error or ""] for run in comparison.timed()
            if run.status != rundir.COMPLETED]
    for method, by_workload in sorted(comparison.cells[comparison.units[0]].items()):   # the same in every unit
        for workload, cell in sorted(by_workload.items()):
            rows += [[f"{method} · {workload} · study {study}, trial {trial}", "missing",
                      "no run directory for this trial of the sweep"] for study, trial in cell.missing]
    rows += [[f"{method} · {workload}", "missing", "no runs of this method on this workload"]
             for method, workload in comparison.missing()]
    return TextTable("Counted as never reaching the target", ["run", "status", "reason"], rows)
