"""A Hydra callback that lists every job's outcome when a sweep ends, the failed ones included.

Hydra runs every job of a sweep even when one fails, then re-raises the first failure and exits
non-zero. This callback prints, at exit, one line per job from the jobs' own ``summary.json``
(completed with its monitored value, failed with its error, or unfinished), so no failure is lost
in the log above. It reads run directories only, so it works with any launcher (basic, submitit).
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from flatmin import rundir


def job_outcome(job_dir: Path) -> str:
    """One line for a job directory: its overrides and what its ``summary.json`` says."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = " ".join(line.removeprefix("- ").strip() for line in overrides_file.read_text().splitlines()) \
        if overrides_file.is_file() else ""
    summary = rundir.read_summary(job_dir)
    if summary is None:
        return f"  #{job_dir.name} unfinished  {overrides}"
    status = summary.get(rundir.STATUS, rundir.UNFINISHED)
    if status != rundir.COMPLETED:
        error = summary.get(rundir.ERROR, "no error recorded")
        return f"  #{job_dir.name} {status.upper():<11} {overrides}\n      {error}"
    return f"  #{job_dir.name} completed   {overrides}"


def sweep_outcomes(sweep_dir: Path) -> list[str]:
    """The outcome lines of every numbered job directory under ``sweep_dir``, in job order."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    return [job_outcome(job) for job in jobs]


def print_sweep_outcomes(sweep_dir: Path) -> None:
    if not sweep_dir.is_dir():
        return
    lines = sweep_outcomes(sweep_dir)
    failed = sum(" completed " not in line for line in lines)
    print(f"\nflatmin sweep {sweep_dir}: {len(lines) - failed} of {len(lines)} jobs completed", file=sys.stderr)
    print("\n".join(lines), file=sys.stderr)


class SweepSummary(Callback):
    """Registered in ``conf/hydra/default.yaml``; active for multiruns only."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.register(print_sweep_outcomes, Path(config.hydra.sweep.dir))
