"""``python -m flatmin.report <sweep or run dirs…> [--format md|latex|csv] [--out DIR] [--best-on-test]
[--protocol seeds|algoperf|crowded_valley] [--target [WORKLOAD:]METRIC=VALUE]… [--unit UNIT]… [--baseline METHOD]
[--r-max R]``.

Prints the report to stdout; with ``--out`` also writes it (``report.md``, ``report.tex`` or
``report.csv`` plus ``not_included.csv``) and the figures there. Failed and unfinished runs are
listed on stderr as well. With ``--target`` or a tuning ``--protocol`` the report compares the methods'
times to target (``comparison.py``): ``--protocol seeds`` adds that comparison to the tables of runs,
``algoperf`` and ``crowded_valley`` report it alone (in CSV, as ``times.csv``), and ``--out`` also gets
``scores.csv``, ``times.csv``, ``profile_<unit>.csv`` and ``.png``, ``curves_passes.png`` and
``curves_seconds.png``. Bad input (a path with no runs, an ``--out`` folder that cannot be written, a
``--target`` that does not parse, …) ends in one sentence and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

from flatmin import rundir
from flatmin.errors import FlatminError
from flatmin.report.comparison import PROTOCOLS, compare, devices
from flatmin.report.comparison_tables import comparison_tables
from flatmin.report.plots import write_comparison_plots, write_plots
from flatmin.report.render import comparison_csv, csv_cells, latex, markdown, not_included, not_included_csv
from flatmin.report.runs import ReportError, find_runs
from flatmin.report.tables import build_sections
from flatmin.report.targets import UNITS

EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv"}
DEFAULT_UNITS = ("passes", "seconds")


def command_line() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(prog="python -m flatmin.report",
                                     description="Tables (mean ± std, 95% intervals, published numbers) and plots "
                                                 "from flatmin run directories; with --target or a tuning "
                                                 "--protocol, the methods' times to target, performance profiles "
                                                 "and speedups.")
    parser.add_argument("paths", nargs="+", type=Path, help="sweep or run directories, searched recursively")
    parser.add_argument("--format", choices=tuple(EXTENSIONS), default="md", help="output format (default: md)")
    parser.add_argument("--out", type=Path, help="also write the report and the figures (PNG) to this directory")
    parser.add_argument("--best-on-test", action="store_true",
                        help="also show each run's best epoch on the test split (trainer.test_every_epoch), "
                             "labelled as selected on test, as GAM's released script reports it")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="seeds",
                        help="which runs a method's time on a workload comes from: seeds (the median over a "
                             "configuration's seeds; default), algoperf (the median over studies of each study's "
                             "fastest trial), crowded_valley (the median over the reseeds of the best tuning trial)")
    parser.add_argument("--target", action="append", default=[], metavar="[WORKLOAD:]METRIC=VALUE",
                        help="the target of one workload, or of all; repeat (default: the runs' tuning.target)")
    parser.add_argument("--unit", action="append", choices=UNITS,
                        help="a unit to compare times in; repeat (default: passes and seconds)")
    parser.add_argument("--baseline", help="the method speedups and paired differences are against (default: sgd "
                                           "when present, else the first method in sorted order)")
    parser.add_argument("--r-max", default="4", help="the largest τ of the performance profiles (default: 4)")
    return parser


def parse_target(text: str) -> tuple[str | None, str, float]:
    """``[WORKLOAD:]METRIC=VALUE`` → (workload or None for all, metric, value)."""
    where, equals, value = text.rpartition("=")
    workload, colon, metric = where.partition(":") if ":" in where else (None, "", where)
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not equals or not metric or (colon and not workload) or not math.isfinite(number):
        raise ReportError(f"--target {text!r} does not parse: give [WORKLOAD:]METRIC=VALUE, VALUE a number "
                          "(val/accuracy=0.9, digits/SmallCNN:val/loss=0.3).")
    return workload, metric, number


def parse_targets(texts: Sequence[str]) -> dict[str | None, tuple[str, float]]:
    """The ``--target`` options by workload (None: all workloads); one per workload."""
    given: dict[str | None, tuple[str, float]] = {}
    for text in texts:
        workload, metric, value = parse_target(text)
        if workload in given:
            raise ReportError(f"--target is given twice for {'all workloads' if workload is None else workload}.")
        given[workload] = (metric, value)
    return given


def parse_r_max(text: str) -> float:
    try:
        r_max = float(text)
    except ValueError:
        r_max = math.nan
    if not (math.isfinite(r_max) and r_max > 1):
        raise ReportError(f"--r-max must be a number > 1 (got {text!r}).")
    return r_max


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, read the runs, print (and write) the report. Returns the exit status."""
    args = command_line().parse_args(argv)
    if args.out and (reason := rundir.unwritable(args.out.absolute())) is not None:
        print(f"flatmin.report: error: the report cannot be written to {args.out}: {reason}.", file=sys.stderr)
        return 2
    units = tuple(dict.fromkeys(args.unit or DEFAULT_UNITS))
    try:
        given, r_max = parse_targets(args.target), parse_r_max(args.r_max)
        runs = find_runs(args.paths)
        comparison = compare(runs, args.protocol, given, units, args.baseline, r_max) \
            if args.protocol != "seeds" or given else None
    except FlatminError as error:
        print(f"flatmin.report: error: {error}", file=sys.stderr)
        return 2
    sections = build_sections(runs, args.best_on_test) if args.protocol == "seeds" else []
    tables = comparison_tables(comparison) if comparison else []
    sources = [str(path) for path in args.paths]
    files = comparison_csv(comparison) if comparison else {}
    text = {"md": lambda: markdown(sections, runs, sources, tables),
            "latex": lambda: latex(sections, runs, sources, tables),
            "csv": lambda: files["times.csv"] if args.protocol != "seeds" else csv_cells(sections)}[args.format]()
    sys.stdout.write(text)
    for run in not_included(runs):
        print(f"flatmin.report: not included: {run.path} ({run.status}: {run.error})", file=sys.stderr)
    if comparison and "seconds" in units and len(kinds := devices(comparison)) > 1:
        print(f"flatmin.report: warning: the runs compared in seconds ran on different devices ({', '.join(kinds)}); "
              "seconds compare only on one kind of machine.", file=sys.stderr)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        written = [args.out / f"report.{EXTENSIONS[args.format]}"]
        written[0].write_text(text)
        if args.format == "csv":
            written.append(args.out / "not_included.csv")
            written[1].write_text(not_included_csv(runs))
        for name, content in files.items():
            written.append(args.out / name)
            written[-1].write_text(content)
        written += write_plots(sections, args.out)
        if comparison:
            written += write_comparison_plots(comparison, args.out)
        print(f"flatmin.report: wrote {', '.join(str(path) for path in written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
