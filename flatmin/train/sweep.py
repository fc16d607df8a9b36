"""A Hydra callback that lists every job's outcome when a sweep ends, the failed ones included.

Hydra runs every job of a sweep even when one fails, then re-raises the first failure and exits
non-zero; a stop signal ends the sweep with its job. This callback prints, at exit, one line per
job from the jobs' own ``summary.json`` (completed with its monitored value, failed with its
error, or unfinished), the jobs the sweep never reached (known for Hydra's basic sweeper, which
lists its jobs up front), and, when some are left to do, the command that continues the sweep. It
reads run directories only, so it works with any launcher (basic, submitit).
"""

from __future__ import annotations

import atexit
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from flatmin import rundir
from flatmin.train.commands import sweep_continue_command

NOT_LAUNCHED = "not launched"
#: Outcomes that the sweep's continue command would change.
LEFT_TO_DO = (rundir.INTERRUPTED, rundir.UNFINISHED, NOT_LAUNCHED)


def planned_jobs(config: DictConfig) -> list[list[str]] | None:
    """The overrides of each job Hydra's basic sweeper launches, in job order; None for another
    sweeper (Optuna draws its trials as it goes) or a sweep this cannot expand here (``glob``)."""
    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        return None
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    try:
        overrides = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
        return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except Exception:                 # e.g. glob(), which needs Hydra's config loader: the count stays unknown
        return None


def job_outcome(job_dir: Path) -> tuple[str, str]:
    """A job directory's status and its line: its overrides and what its ``summary.json`` says."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = " ".join(line.removeprefix("- ").strip() for line in overrides_file.read_text().splitlines()) \
        if overrides_file.is_file() else ""
    summary = rundir.read_summary(job_dir)
    if summary is None:
        return rundir.UNFINISHED, f"  #{job_dir.name} unfinished  {overrides}"
    status = summary.get(rundir.STATUS, rundir.UNFINISHED)
    if status != rundir.COMPLETED:
        error = summary.get(rundir.ERROR, "no error recorded")
        return status, f"  #{job_dir.name} {status.upper():<11} {overrides}\n      {error}"
    return status, f"  #{job_dir.name} completed   {overrides}"


def sweep_outcomes(sweep_dir: Path, planned: list[list[str]] | None = None) -> list[tuple[str, str]]:
    """The status and line of every job, in job order: the numbered job directories under
    ``sweep_dir``, and the ``planned`` jobs that have none."""
    launched = {int(p.name): p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()}
    planned = planned or []
    return [job_outcome(launched[number]) if number in launched
            else (NOT_LAUNCHED, f"  #{number} {NOT_LAUNCHED}  {' '.join(planned[number])}")
            for number in sorted(set(launched) | set(range(len(planned))))]


def print_sweep_outcomes(sweep_dir: Path, planned: list[list[str]] | None = None,
                         overrides: list[str] | None = None) -> None:
    outcomes = sweep_outcomes(sweep_dir, planned) if sweep_dir.is_dir() else []
    if all(status == NOT_LAUNCHED for status, _ in outcomes):
        return                              # Hydra refused the sweep (its error says why): nothing ran
    tally = Counter(status for status, _ in outcomes)
    others = ", ".join(f"{count} {status}" for status, count in tally.items() if status != rundir.COMPLETED)
    print(f"\nflatmin sweep {sweep_dir}: {tally[rundir.COMPLETED]} of {len(outcomes)} jobs completed"
          + (f" ({others})" if others else ""), file=sys.stderr)
    print("\n".join(line for _, line in outcomes), file=sys.stderr)
    if overrides is not None and any(tally[status] for status in LEFT_TO_DO):
        print(f"continue the sweep with: {sweep_continue_command(overrides, sweep_dir)}", file=sys.stderr)


class SweepSummary(Callback):
    """Registered in ``flatmin/conf/hydra/default.yaml``; active for multiruns only."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.register(print_sweep_outcomes, Path(config.hydra.sweep.dir), planned_jobs(config),
                        list(config.hydra.overrides.task))
