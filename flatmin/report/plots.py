"""Figures of a report section (matplotlib, Agg, PNG): learning curves per configuration from the
``metrics.jsonl`` epoch records (mean over seeds, ± std shaded) and the Hessian trace and λ_max
per configuration (mean, ± std bars)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from flatmin import rundir
from flatmin.report.tables import Group, Section

CURVES = (("train/loss", "training loss"), ("val/loss", "validation loss"), ("val/accuracy", "validation accuracy"))
SHARPNESS = (("trace", "Hessian trace"), ("lambda_max", "λ_max"))


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


def plot_sharpness(section: Section, path: Path) -> Path | None:
    """Bars of the Hessian trace and λ_max per configuration; None when no run measured them."""
    measured = [group for group in section.groups if any(rundir.SHARPNESS in run.summary for run in group.runs)]
    if not measured:
        return None
    figure = Figure(figsize=(max(6.0, 1.2 * len(measured) + 2), 4), layout="constrained")
    for axes, (key, title) in zip(figure.subplots(1, len(SHARPNESS)), SHARPNESS):
        values = [np.array([run.summary[rundir.SHARPNESS][key] for run in group.runs
                            if rundir.SHARPNESS in run.summary]) for group in measured]
        positions = np.arange(len(measured))
        axes.bar(positions, [v.mean() for v in values], yerr=[sample_std(v) for v in values],
                 capsize=4)
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
