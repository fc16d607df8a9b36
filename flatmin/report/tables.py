"""Completed runs grouped by everything but the seed, laid out in tables of mean ± std.

Runs with the same settings (``Run.settings``: the resolved config without the seed, paths and
logging) form a :class:`Group`. Each experiment (the Hydra ``experiment`` choice) gets its
papers' tables (``published.py``), a generic table (rows = method, columns = dataset) of the
configurations those tables do not place, and a detail table of every configuration and metric.
Numbers selected on the test split (``trainer.test_every_epoch``) are left out unless asked for
(``best_on_test``).

When several configurations fall into one cell of a layout (a sweep over rho, the baseline at
twice the epochs), each gets its own line, labelled with the settings that tell them apart.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from flatmin.report.published import (BEST_EPOCH_ON_TEST, FINAL_DEV_ACCURACY, MODEL_NAMES, PAPER_TABLES, Heading,
                                      Metric, accuracy_percent)
from flatmin.report.runs import Run
from flatmin.report.stats import Summary, summarise
from flatmin.rundir import (BEST_TEST, BEST_VAL, EVALUATED, FINAL, LAST_TRAINING_WEIGHTS, SHARPNESS, TEST,
                            TEST_OF_BEST_VAL, TEST_OF_LAST)

# The generic table's metric: the first of these that some run has (without a validation split
# there is no best-validation model; GLUE has no labelled test split).
GENERIC_METRICS = (accuracy_percent(TEST_OF_BEST_VAL), accuracy_percent(TEST_OF_LAST), FINAL_DEV_ACCURACY)
#: The final training weights' test accuracy (%), beside the evaluated weights' (see :func:`generic_table`).
TRAINING_WEIGHTS_ACCURACY = accuracy_percent(LAST_TRAINING_WEIGHTS)
# Metric names shown ×100, and the unit that says so.
PERCENT_UNITS = {"accuracy": "%", "f1": "%", "mcc": "×100", "pearson": "×100", "spearman": "×100"}
_ABSENT = object()


@dataclass
class Group:
    """Completed runs that differ only by seed; ``label`` names it among its experiment's groups."""

    runs: list[Run]
    label: str = ""

    @property
    def facets(self) -> dict[str, Any]:
        return self.runs[0].facets

    def summarise(self, metric: Metric) -> Summary | None:
        values = [value for value in (metric.read(run.summary) for run in self.runs) if value is not None]
        return summarise(values, bounds=metric.bounds) if values else None


@dataclass
class Entry:
    """One cell: ours over seeds (None when no run has the metric) and the published number."""

    ours: Summary | None
    published: float | None = None


@dataclass
class Table:
    title: str
    rows: list[str]
    columns: list[str]
    metrics: dict[str, Metric]                # column → the metric its numbers are
    entries: dict[tuple[str, str], Entry]     # (row, column) → entry
    notes: tuple[str, ...] = ()
    compare: bool = False                     # whether to show the published number and the difference
    corner: str = ""                          # the row headings' header


@dataclass
class TextTable:
    """A table of text cells, as the comparison of methods lays out times, points and selections."""

    title: str
    header: list[str]
    rows: list[list[str]]
    notes: tuple[str, ...] = ()


@dataclass
class Section:
    experiment: str | None
    groups: list[Group]
    tables: list[Table] = field(default_factory=list)


def configurations(runs: Iterable[Run],
                   facets: Callable[[Run], dict[str, Any]] = lambda run: run.facets) -> list[list[Run]]:
    """``runs`` by ``facets`` (default: settings and choices): each list differs only by seed, in the order
    first seen."""
    by_facets: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        by_facets[tuple(sorted(facets(run).items(), key=str))].append(run)
    return list(by_facets.values())


def group_runs(runs: Iterable[Run]) -> dict[str | None, list[Group]]:
    """Completed runs by experiment, then by facets (settings and choices); groups labelled, in order
    of their labels."""
    experiments: dict[str | None, list[Group]] = defaultdict(list)
    for members in configurations(run for run in runs if run.status == "completed"):
        experiments[members[0].facets["experiment"]].append(Group(members))
    for groups in experiments.values():
        label_groups(groups)
        groups.sort(key=lambda group: group.label)
    return dict(experiments)


def distinguishing(groups: Sequence[Group]) -> list[str]:
    """The facets (settings and choices) whose values are not the same in all ``groups`` (a missing
    key counts as a value): distinct groups always have at least one."""
    keys = sorted({key for group in groups for key in group.facets})
    return [key for key in keys if len({repr(group.facets.get(key, _ABSENT)) for group in groups}) > 1]


def describe(group: Group, keys: Sequence[str]) -> str:
    facets = group.facets
    return ", ".join(f"{key}={facets[key]}" if key in facets else f"no {key}" for key in keys)


def label_groups(groups: Sequence[Group], keys: Sequence[str] = ("method", "dataset", "model")) -> None:
    """Label each group by its ``keys`` facets (``method · dataset · model``), plus the settings that set
    apart groups sharing those."""
    by_name: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        facets = group.facets
        by_name[" · ".join(str(facets[key]) for key in keys)].append(group)
    for name, members in by_name.items():
        keys = distinguishing(members) if len(members) > 1 else []
        for group in members:
            group.label = f"{name} · {describe(group, keys)}" if keys else name


def selects(heading: Heading, facets: dict[str, Any]) -> bool:
    """Whether a row or column selects a group with these facets (every ``match`` key agrees)."""
    for key, accepted in heading.match.items():
        accepted = accepted if isinstance(accepted, tuple) else (accepted,)
        if key not in facets or facets[key] not in accepted:
            return False
    return True


def lay_out(title: str, metric: Metric, rows: Sequence[Heading], columns: Sequence[Heading],
            groups: Sequence[Group], published: dict[tuple[str, str], float] | None = None,
            notes: tuple[str, ...] = (), corner: str = "") -> tuple[Table, list[Group]]:
    """Place each group in every cell whose row and column select it (GLUE's columns are one task's
    metrics); return the table and the groups no cell selects. Lines and columns with nothing in
    them (no run, no published number) are left out; the rest keep the layout's order, a row's
    extra lines (several groups in one cell) after it."""
    published = published or {}
    cells: dict[tuple[str, str], list[Group]] = defaultdict(list)
    unplaced = []
    for group in groups:
        placed = [(row.label, column.label) for row in rows if selects(row, group.facets)
                  for column in columns if selects(column, group.facets)]
        for cell in placed:
            cells[cell].append(group)
        if not placed:
            unplaced.append(group)

    metrics = {column.label: column.metric or metric for column in columns}
    entries = {cell: Entry(None, number) for cell, number in published.items()}
    lines: dict[str, set[str]] = defaultdict(set)
    for (row, column), members in cells.items():
        keys = distinguishing(members) if len(members) > 1 else []
        for group in members:
            line = f"{row} · {describe(group, keys)}" if keys else row
            lines[row].add(line)
            entries[(line, column)] = Entry(group.summarise(metrics[column]), published.get((row, column)))
    for row, _ in published:
        lines[row].add(row)
    ordered_rows = [line for heading in rows
                    for line in sorted(lines[heading.label], key=lambda line: (line != heading.label, line))]
    used_columns = {column for _, column in entries}
    table = Table(title, ordered_rows, [c.label for c in columns if c.label in used_columns], metrics, entries,
                  notes, compare=bool(published), corner=corner)
    return table, unplaced


def generic_table(title: str, groups: Sequence[Group]) -> Table:
    """Rows = method, columns = dataset, of the first of :data:`GENERIC_METRICS` some run has;
    ``title`` is followed by that metric's label. Where some run evaluates other weights than it
    trains (summary.json's ``evaluated``: Lookahead's slow weights, a weight average), each dataset
    also gets a column of the final training weights' test accuracy, and a note says so."""
    metric = next((metric for metric in GENERIC_METRICS
                   if any(metric.read(run.summary) is not None for group in groups for run in group.runs)),
                  GENERIC_METRICS[0])
    methods = sorted({group.facets["method"] for group in groups}, key=str)
    datasets = sorted({group.facets["dataset"] for group in groups}, key=str)
    columns = [Heading(str(d), {"dataset": d}) for d in datasets]
    evaluated = sorted({run.summary[EVALUATED] for group in groups for run in group.runs
                        if run.summary.get(EVALUATED)})
    notes: tuple[str, ...] = ()
    if evaluated and metric.path[0] == TEST:
        columns = [column for d in datasets for column in (
            Heading(str(d), {"dataset": d}),
            Heading(f"{d}, {MODEL_NAMES[LAST_TRAINING_WEIGHTS]}", {"dataset": d}, TRAINING_WEIGHTS_ACCURACY))]
        notes = (f"Some runs evaluate and save other weights than they train ({', '.join(evaluated)}): their "
                 f"dataset columns are those weights; the '{MODEL_NAMES[LAST_TRAINING_WEIGHTS]}' columns are their "
                 "final training weights' test accuracy.",)
    table, _ = lay_out(title + metric.label, metric, [Heading(str(m), {"method": m}) for m in methods],
                       columns, groups, notes=notes, corner="method")
    return table


#: The numbers of ``summary.json["sharpness"]`` the detail table shows (path inside it, label).
SHARPNESS_METRICS = ((("trace",), "Hessian trace"), (("lambda_max",), "λ_max"), (("m_sharpness",), "m-sharpness"),
                     (("worst_case", "sharpness"), "worst-case sharpness"),
                     (("average", "sharpness"), "average sharpness"))


def detail_metrics(groups: Sequence[Group], best_on_test: bool = False) -> list[Metric]:
    """Every metric some run of ``groups`` has: test metrics of the final and best-validation
    models (and, with ``best_on_test``, of the best epoch on test), validation metrics (every
    validation split's) of the final and the best epoch, and the sharpness measured (``SHARPNESS_METRICS``)."""
    records = [(FINAL, "final epoch", "val"), (BEST_VAL, "best epoch", "val")]
    if best_on_test:
        records.append((BEST_TEST, BEST_EPOCH_ON_TEST, "test"))
    found: dict[tuple[str, ...], Metric] = {}
    for run in (run for group in groups for run in group.runs):
        for model, name in MODEL_NAMES.items():
            for key in (run.summary.get(TEST) or {}).get(model) or {}:
                found.setdefault((TEST, model, key), _scaled(f"{key}, {name}", (TEST, model, key)))
        for record, name, prefix in records:
            for key in run.summary.get(record) or {}:
                if key.startswith(prefix):
                    found.setdefault((record, key), _scaled(f"{key}, {name}", (record, key)))
        for path, label in SHARPNESS_METRICS:
            metric = Metric(label, (SHARPNESS, *path), digits=None)
            if metric.read(run.summary) is not None:
                found.setdefault(metric.path, metric)
    order = {(TEST, TEST_OF_LAST): 0, (TEST, TEST_OF_BEST_VAL): 1, (TEST, LAST_TRAINING_WEIGHTS): 2, (BEST_TEST,): 3,
             (FINAL,): 4, (BEST_VAL,): 5, (SHARPNESS,): 6}
    return sorted(found.values(), key=lambda m: (order.get(m.path[:2], order.get(m.path[:1], 7)), m.path))


def _scaled(label: str, path: tuple[str, ...]) -> Metric:
    unit = PERCENT_UNITS.get(path[-1].rsplit("/", 1)[-1])
    if unit is None:
        return Metric(label, path, digits=None)
    return Metric(f"{label} ({unit})", path, scale=100.0)


def detail_table(groups: Sequence[Group], best_on_test: bool = False) -> Table:
    """Every configuration (row) and every metric (column)."""
    metrics = detail_metrics(groups, best_on_test)
    entries = {(group.label, metric.label): Entry(group.summarise(metric)) for group in groups for metric in metrics}
    return Table("Every configuration", [group.label for group in groups], [metric.label for metric in metrics],
                 {metric.label: metric for metric in metrics},
                 {cell: entry for cell, entry in entries.items() if entry.ours is not None}, corner="configuration")


def build_sections(runs: Iterable[Run], best_on_test: bool = False) -> list[Section]:
    """One section per experiment: the papers' tables, the configurations they leave out, the details.
    Experiments with paper tables come first, in ``PAPER_TABLES`` order; runs without one come last.
    ``best_on_test`` adds the numbers selected on the test split (``trainer.test_every_epoch``)."""
    grouped = group_runs(runs)
    known = list(dict.fromkeys(table.experiment for table in PAPER_TABLES))
    order = sorted(grouped, key=lambda e: (e is None, known.index(e) if e in known else len(known), str(e)))
    sections = []
    for experiment in order:
        section = Section(experiment, grouped[experiment])
        papers = [paper for paper in PAPER_TABLES
                  if paper.experiment == experiment and (best_on_test or not paper.metric.selected_on_test)]
        outside = {id(group) for group in section.groups}
        for paper in papers:
            table, unplaced = lay_out(f"{paper.title}: {paper.metric.label}", paper.metric, paper.rows,
                                      paper.columns, section.groups, dict(paper.published), paper.notes)
            section.tables.append(table)
            outside &= {id(group) for group in unplaced}
        if outside:
            prefix = "Configurations outside the paper's layout: " if papers else ""
            section.tables.append(generic_table(prefix, [group for group in section.groups if id(group) in outside]))
        section.tables.append(detail_table(section.groups, best_on_test))
        sections.append(section)
    return sections
