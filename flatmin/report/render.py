"""The report as Markdown, LaTeX (a fragment to ``\\input``; needs ``booktabs``) or CSV.

Markdown and LaTeX show each table as laid out: a cell is ``mean ± std [95% interval] (n=runs)``,
followed, where the paper has a number, by that number and our difference to it; then the
comparison of methods' tables (``comparison_tables.py``), as text. Both end with the runs that were
not included (failed or unfinished) and why. CSV is one line per cell with the numbers unformatted,
for further analysis; the runs not included are written separately (:func:`not_included_csv`), and so
are the comparison's numbers (:func:`comparison_csv`).
"""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Sequence

from flatmin import rundir
from flatmin.report.runs import Run
from flatmin.report.stats import Summary
from flatmin.report.comparison import Comparison
from flatmin.report.tables import Section, Table, TextTable
from flatmin.report.published import Metric

COMPARISON = "Comparison of methods: time to target"
LEGEND = ("Cells: mean ± std over seeds [95% Student-t interval of the mean, cut to the metric's range] (n = runs); "
          "paper: the published number; Δ: our mean − paper.")


def ours_text(summary: Summary | None, metric: Metric) -> str:
    if summary is None:
        return ""
    if summary.std is None:
        return f"{metric.format(summary.mean)} (n=1)"
    return (f"{metric.format(summary.mean)} ± {metric.format(summary.std)} "
            f"[{metric.format(summary.ci_low)}, {metric.format(summary.ci_high)}] (n={summary.n})")


def grid(table: Table) -> tuple[list[str], list[list[str]]]:
    """The table as a header and rows of text cells (three per column when comparing with the paper)."""
    header = [table.corner]
    for column in table.columns:
        header += [column, "paper", "Δ"] if table.compare else [column]
    rows = []
    for row in table.rows:
        cells = [row]
        for column in table.columns:
            entry, metric = table.entries.get((row, column)), table.metrics[column]
            ours = entry.ours if entry else None
            cells.append(ours_text(ours, metric))
            if table.compare:
                published = entry.published if entry else None
                cells.append("" if published is None else metric.format(published))
                cells.append("" if ours is None or published is None else
                             "+" * (ours.mean >= published) + metric.format(ours.mean - published))
        rows.append(cells)
    return header, rows


def headline(runs: Sequence[Run], sources: Sequence[str]) -> str:
    statuses = (rundir.COMPLETED, rundir.FAILED, rundir.DIVERGED, rundir.INTERRUPTED, rundir.UNFINISHED)
    counts = ", ".join(f"{sum(run.status == status for run in runs)} {status}" for status in statuses)
    return f"{len(runs)} run directories under {', '.join(sources)}: {counts}."


def not_included(runs: Sequence[Run]) -> list[Run]:
    """The runs no table averages: every one that did not complete, with its status and reason."""
    return [run for run in runs if run.status != rundir.COMPLETED]


def experiment_title(section: Section) -> str:
    return f"Experiment {section.experiment}" if section.experiment else "Runs without an experiment"


# -- Markdown ------------------------------------------------------------------------------------
def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *map(line, rows)]


def _markdown_block(title: str, header: list[str], rows: list[list[str]], notes: Sequence[str]) -> list[str]:
    out = ["", f"### {title}", "", *_markdown_table(header, rows)]
    return out + (["", *(f"- {note}" for note in notes)] if notes else [])


def markdown(sections: Sequence[Section], runs: Sequence[Run], sources: Sequence[str],
             comparison: Sequence[TextTable] = ()) -> str:
    """The report: the sections' tables, then the ``comparison``'s, then the runs not included."""
    out = ["# flatmin report", "", headline(runs, sources), *([LEGEND] if sections or not comparison else [])]
    for section in sections:
        out += ["", f"## {experiment_title(section)}"]
        for table in section.tables:
            out += _markdown_block(table.title, *grid(table), table.notes)
    if comparison:
        out += ["", f"## {COMPARISON}"]
        for text_table in comparison:
            out += _markdown_block(text_table.title, text_table.header, text_table.rows, text_table.notes)
    excluded = not_included(runs)
    if excluded:
        out += ["", "## Runs not included (failed, diverged, interrupted or unfinished)", ""]
        out += _markdown_table(["run", "status", "error"], [[str(r.path), r.status, r.error or ""] for r in excluded])
    return "\n".join(out) + "\n"


# -- LaTeX ---------------------------------------------------------------------------------------
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "[": "{[}", "]": "{]}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "±": r"$\pm$", "Δ": r"$\Delta$", "λ": r"$\lambda$", "×": r"$\times$", "³": r"$^3$", "⁴": r"$^4$",
          "·": r"$\cdot$", "−": "-", "∞": r"$\infty$", "ρ": r"$\rho$", "τ": r"$\tau$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(char, char) for char in text)


def _latex_table(caption: str, header: list[str], rows: list[list[str]], notes: Sequence[str] = (),
                 spec: str | None = None) -> list[str]:
    def line(cells: list[str]) -> str:
        return " & ".join(latex_escape(cell) for cell in cells) + r" \\"

    out = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
           rf"\begin{{tabular}}{{{spec or 'l' + 'c' * (len(header) - 1)}}}", r"\toprule", line(header), r"\midrule",
           *map(line, rows), r"\bottomrule", r"\end{tabular}"]
    out += [rf"\par\smallskip{{\footnotesize {latex_escape(note)}}}" for note in notes]
    return out + [r"\end{table}"]


def latex(sections: Sequence[Section], runs: Sequence[Run], sources: Sequence[str],
          comparison: Sequence[TextTable] = ()) -> str:
    """The report as :func:`markdown` has it, as a LaTeX fragment."""
    out = ["% flatmin report (needs \\usepackage{booktabs})", latex_escape(headline(runs, sources)),
           *([latex_escape(LEGEND)] if sections or not comparison else [])]
    for section in sections:
        out += ["", rf"\section*{{{latex_escape(experiment_title(section))}}}"]
        for table in section.tables:
            out += _latex_table(table.title, *grid(table), table.notes)
    if comparison:
        out += ["", rf"\section*{{{latex_escape(COMPARISON)}}}"]
        for text_table in comparison:
            out += _latex_table(text_table.title, text_table.header, text_table.rows, text_table.notes)
    excluded = not_included(runs)
    if excluded:
        out += ["", r"\section*{Runs not included (failed, diverged, interrupted or unfinished)}"]
        out += _latex_table("Runs not included", ["run", "status", "error"],
                            [[str(r.path), r.status, r.error or ""] for r in excluded],
                            spec=r"p{0.4\linewidth}lp{0.4\linewidth}")
    return "\n".join(out) + "\n"


# -- CSV -----------------------------------------------------------------------------------------
CSV_FIELDS = ("experiment", "table", "row", "column", "metric", "n", "mean", "std", "ci95_low", "ci95_high",
              "published", "difference")


def csv_cells(sections: Sequence[Section]) -> str:
    """One line per table cell with a number: our statistics and the published number, unformatted."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for section in sections:
        for table in section.tables:
            cells = ((row, column) for row in table.rows for column in table.columns)
            for row, column, entry in ((r, c, table.entries[r, c]) for r, c in cells if (r, c) in table.entries):
                ours = entry.ours
                stats = (ours.n, ours.mean, ours.std, ours.ci_low, ours.ci_high) if ours else (0, *[None] * 4)
                difference = None if ours is None or entry.published is None else ours.mean - entry.published
                writer.writerow([section.experiment or "", table.title, row, column, table.metrics[column].label,
                                 *stats, entry.published, difference])
    return buffer.getvalue()


def not_included_csv(runs: Sequence[Run]) -> str:
    return _csv(("run", "status", "error"),
                ((str(run.path), run.status, run.error or "") for run in not_included(runs)))


def comparison_csv(comparison: Comparison) -> dict[str, str]:
    """The comparison's numbers at full precision (``repr``; ``inf`` for never), by file name:
    ``scores.csv``, ``times.csv`` and, per unit, ``profile_<unit>.csv`` (ρ(τ), a column per τ)."""
    files = {"scores.csv": _csv(("unit", "method", "score"), (
                 (unit, method, repr(score)) for unit in comparison.units
                 for method, score in sorted(comparison.scores[unit].items()))),
             "times.csv": _csv(("method", "workload", "unit", "time"), (
                 (method, workload, unit, repr(float(comparison.times[unit][method][workload])))
                 for method in comparison.methods for workload in comparison.workloads for unit in comparison.units))}
    for unit in comparison.units:
        profiles = comparison.profiles[unit]
        files[f"profile_{unit}.csv"] = _csv(("method", *(repr(float(tau)) for tau in profiles.taus)), (
            (method, *(repr(float(rho)) for rho in profiles.rho[method])) for method in comparison.methods))
    return files


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
