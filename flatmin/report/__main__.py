"""``python -m flatmin.report <sweep or run dirs…> [--format md|latex|csv] [--out DIR] [--best-on-test]``.

Prints the report to stdout; with ``--out`` also writes it (``report.md``, ``report.tex`` or
``report.csv`` plus ``not_included.csv``) and the figures there. Failed and unfinished runs are
listed on stderr as well. Bad input (a path with no runs, an ``--out`` folder that cannot be written)
ends in one sentence and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from flatmin import rundir
from flatmin.errors import FlatminError
from flatmin.report.plots import write_plots
from flatmin.report.render import csv_cells, latex, markdown, not_included, not_included_csv
from flatmin.report.runs import find_runs
from flatmin.report.tables import build_sections

EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv"}


def command_line() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(prog="python -m flatmin.report",
                                     description="Tables (mean ± std, 95% intervals, published numbers) and plots "
                                                 "from flatmin run directories.")
    parser.add_argument("paths", nargs="+", type=Path, help="sweep or run directories, searched recursively")
    parser.add_argument("--format", choices=tuple(EXTENSIONS), default="md", help="output format (default: md)")
    parser.add_argument("--out", type=Path, help="also write the report and the figures (PNG) to this directory")
    parser.add_argument("--best-on-test", action="store_true",
                        help="also show each run's best epoch on the test split (trainer.test_every_epoch), "
                             "labelled as selected on test, as GAM's released script reports it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, read the runs, print (and write) the report. Returns the exit status."""
    args = command_line().parse_args(argv)
    if args.out and (reason := rundir.unwritable(args.out.absolute())) is not None:
        print(f"flatmin.report: error: the report cannot be written to {args.out}: {reason}.", file=sys.stderr)
        return 2
    try:
        runs = find_runs(args.paths)
    except FlatminError as error:
        print(f"flatmin.report: error: {error}", file=sys.stderr)
        return 2
    sections = build_sections(runs, args.best_on_test)
    sources = [str(path) for path in args.paths]
    text = {"md": lambda: markdown(sections, runs, sources), "latex": lambda: latex(sections, runs, sources),
            "csv": lambda: csv_cells(sections)}[args.format]()
    sys.stdout.write(text)
    for run in not_included(runs):
        print(f"flatmin.report: not included: {run.path} ({run.status}: {run.error})", file=sys.stderr)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        written = [args.out / f"report.{EXTENSIONS[args.format]}"]
        written[0].write_text(text)
        if args.format == "csv":
            written.append(args.out / "not_included.csv")
            written[1].write_text(not_included_csv(runs))
        written += write_plots(sections, args.out)
        print(f"flatmin.report: wrote {', '.join(str(path) for path in written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
