"""Figures of a report section (matplotlib, Agg, PNG): learning curves per configuration from the
``metrics.jsonl`` epoch records (mean over seeds, ± std shaded) and the Hessian trace and λ_max
per configuration (mean, ± std bars); and of a comparison of methods: the performance profiles
ρ(τ) per unit, and the monitored validation metric against gradient passes and training seconds."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from flatmin import rundir
from flatmin.checks import is_number
from flatmin.report.comparison import Comparison
from flatmin.report.profiles import Profiles
from flatmin.report.protocols import ALGOPERF, CROWDED_VALLEY, monitored, workload_of
from flatmin.report.runs import Run
from flatmin.report.tables import Group, Section
from flatmin.report.targets import READING

CURVES = (("train/loss", "training loss"), ("val/loss", "validation loss"), ("val/accuracy", "validation accuracy"))
SHARPNESS = (("trace", "Hessian trace"), ("lambda_max", "λ_max"))
#: Line styles cycled with the colours, so that methods with equal profiles stay visible.
STYLES = ("-", "--", "-.", ":")
#: The readings the comparison's learning curves are drawn against, whatever the units compared.
CURVE_UNITS = ("passes", "seconds")
#: The runs a curve averages, under each protocol.
CURVE_RUNS = {"seeds": "a configuration's seeds", ALGOPERF: "each study's fastest trial",
              CROWDED_VALLEY: "the reseeds (method) or the one-shot runs (method (one-shot))"}
READING_LABELS = {"epochs": "epochs", "steps": "optimizer steps", "passes": "gradient passes",
                  "seconds": "training seconds"}


def sample_std(values: np.ndarray) -> float:
    """The seeds' standard deviation (n−1), as in the tables; 0 for a single run."""
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def slug(name: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name or "no_experiment")


def curves(groups: Sequence[Group]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """For each metric of :data:`CURVES` and each group: epochs, mean and std over its runs (at each
    epoch, over the runs that logged it)."""
    found: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for group in groups:
        records = [record for run in group.runs for record in run.epoch_records()]
        for key, _ in CURVES:
            by_epoch: dict[int, list[float]] = {}
            for record in records:
                if record.get(key) is not None:
                    by_epoch.setdefault(record["epoch"], []).append(record[key])
            if by_epoch:
                epochs = np.array(sorted(by_epoch))
                values = [np.array(by_epoch[epoch]) for epoch in epochs]
                found.setdefault(key, {})[group.label] = (epochs, np.array([v.mean() for v in values]),
                                                          np.array([sample_std(v) for v in values]))
    return found


def plot_curves(section: Section, path: Path) -> Path | None:
    """One panel per metric, one line per configuration; None when no run logged an epoch."""
    found = curves(section.groups)
    if not found:
        return None
    panels = [(key, title) for key, title in CURVES if key in found]
    figure = Figure(figsize=(5 * len(panels), 4), layout="constrained")
    for axes, (key, title) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        for label, (epochs, mean, std) in found[key].items():
            (line,) = axes.plot(epochs, mean, label=label)
            axes.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        axes.set(title=title, xlabel="epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.axes[0].legend(fontsize="small")
    figure.suptitle(f"{section.experiment or 'runs without an experiment'}: mean over seeds (± std)")
    figure.savefig(path, dpi=100)
    return path


def sharpness_values(group: Group, key: str) -> np.ndarray:
    """The runs' measured ``key`` (``trace``, ``lambda_max``): runs that measured other things, or whose
    measurement failed (``{"error": …}``), have none."""
    return np.array([value for value in ((run.summary.get(rundir.SHARPNESS) or {}).get(key) for run in group.runs)
                     if is_number(value)], dtype=float)


def plot_sharpness(section: Section, path: Path) -> Path | None:
    """Bars of the Hessian trace and λ_max per configuration; None when no run measured them."""
    measured = [group for group in section.groups if len(sharpness_values(group, SHARPNESS[0][0]))]
    if not measured:
        return None
    figure = Figure(figsize=(max(6.0, 1.2 * len(measured) + 2), 4), layout="constrained")
    for axes, (key, title) in zip(figure.subplots(1, len(SHARPNESS)), SHARPNESS):
        values = [sharpness_values(group, key) for group in measured]
        positions = np.arange(len(measured))
        axes.bar(positions, [v.mean() if len(v) else np.nan for v in values],
                 yerr=[sample_std(v) if len(v) else np.nan for v in values], capsize=4)
        axes.set_xticks(positions, [group.label for group in measured], rotation=30, ha="right", fontsize="small")
        axes.set_title(title)
    figure.suptitle(f"{section.experiment or 'runs without an experiment'}: mean over seeds (± std)")
    figure.savefig(path, dpi=100)
    return path


def write_plots(sections: Sequence[Section], out: Path) -> list[Path]:
    """Both figures of every section, as ``<experiment>_curves.png`` and ``<experiment>_sharpness.png``."""
    written = []
    for section in sections:
        name = slug(section.experiment)
        written += [plot_curves(section, out / f"{name}_curves.png"),
                    plot_sharpness(section, out / f"{name}_sharpness.png")]
    return [path for path in written if path is not None]


def plot_profile(profiles: Profiles, unit: str, path: Path) -> Path:
    """ρ(τ) of each method as steps over τ from 1 to r_max."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    for index, (method, rho) in enumerate(sorted(profiles.rho.items())):
        axes.step(profiles.taus, rho, where="post", label=method, linestyle=STYLES[index % len(STYLES)],
                  linewidth=1.8)
    axes.set(xlim=(profiles.taus[0], profiles.taus[-1]), ylim=(-0.03, 1.03),
             xlabel="τ: time to target over the fastest method's", ylabel="ρ(τ): fraction of workloads within τ",
             title=f"Performance profiles, time to target in {READING_LABELS[unit]}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.savefig(path, dpi=100)
    return path


def reading_curve(runs: Sequence[Run], metric: str, unit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At each epoch some run logged ``metric`` and the ``unit`` reading: the mean reading, and the mean
    and std of the metric, over those runs."""
    by_epoch: dict[int, list[tuple[float, float]]] = {}
    for run in runs:
        for record in run.epoch_records():
            if is_number(record.get(metric)) and READING[unit] in record:
                by_epoch.setdefault(record["epoch"], []).append((record[READING[unit]], record[metric]))
    pairs = [np.array(by_epoch[epoch], dtype=float) for epoch in sorted(by_epoch)]
    return (np.array([p[:, 0].mean() for p in pairs]), np.array([p[:, 1].mean() for p in pairs]),
            np.array([sample_std(p[:, 1]) for p in pairs]))


def plot_reading_curves(comparison: Comparison, unit: str, path: Path) -> Path:
    """One panel per workload (three to a row): each method's monitored validation metric against the
    mean ``unit`` reading over its completed runs (± std), and the target when it is that metric."""
    workloads = comparison.workloads
    columns = min(3, len(workloads))
    rows = math.ceil(len(workloads) / columns)
    figure = Figure(figsize=(4.5 * columns + 2.5, 3.8 * rows + 0.7), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False).ravel()
    lines = {}
    for axes, workload in zip(panels, workloads):
        metric = monitored(next(run for run in comparison.runs if workload_of(run.config) == workload))
        plotted = False
        for index, method in enumerate(comparison.methods):
            cell = comparison.curve_cells(unit).get(method, {}).get(workload)
            runs = [member.run for member in cell.members if member.run and member.run.status == rundir.COMPLETED] \
                if cell else []
            x, mean, std = reading_curve(runs, metric, unit)
            if len(x):
                colour = f"C{index % 10}"
                (lines[method],) = axes.plot(x, mean, color=colour, linestyle=STYLES[index % len(STYLES)],
                                             marker=".", label=method)
                axes.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2)
                plotted = True
        target = comparison.targets[workload]
        if target.metric == metric:
            lines["target"] = axes.axhline(target.value, color="grey", linestyle=":", label="target")
        if not plotted:
            axes.text(0.5, 0.5, f"no completed run logged\n{metric} with {READING_LABELS[unit]}", ha="center",
                      va="center", transform=axes.transAxes)
        axes.set(title=workload, xlabel=f"{READING_LABELS[unit]} (mean over runs)", ylabel=metric)
        axes.grid(alpha=0.3)
    for axes in panels[len(workloads):]:
        axes.set_visible(False)
    if lines:
        figure.legend(list(lines.values()), list(lines), loc="outside right center", fontsize="small")
    figure.suptitle(f"Validation metric against {READING_LABELS[unit]}\n"
                    f"mean ± std over {CURVE_RUNS[comparison.protocol]}", fontsize="medium")
    figure.savefig(path, dpi=100)
    return path


def write_comparison_plots(comparison: Comparison, out: Path) -> list[Path]:
    """``profile_<unit>.png`` for each unit compared, ``curves_passes.png`` and ``curves_seconds.png``."""
    return [*(plot_profile(comparison.profiles[unit], unit, out / f"profile_{unit}.png") for unit in comparison.units),
            *(plot_reading_curves(comparison, unit, out / f"curves_{unit}.png") for unit in CURVE_UNITS)]
