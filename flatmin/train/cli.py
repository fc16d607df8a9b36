"""The training command: ``flatmin-train``, ``python -m flatmin.train``, and ``python train.py`` in a clone.

Hydra composes the job's config from the packaged configs (``pkg://flatmin.conf``; a user's own
options come in with ``--config-dir DIR``) and :func:`flatmin.train.run.main` runs it. Exit status:
that of the job (``rundir.EXIT_CODES``), and 2 (bad input) when Hydra itself refuses the command
line (a misspelt key, an unknown option), which it would report as 1.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from flatmin import rundir
from flatmin.runtime.distributed import share_run_dir_under_torchrun
from flatmin.train.commands import relaunch_command
from flatmin.train.run import main as run_job

#: Whether Hydra composed a config and started a job: until then, Hydra's exit status 1 is its
#: refusal of the command line, which is bad input.
job_started = False


@hydra.main(version_base="1.3", config_path="pkg://flatmin.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    global job_started
    job_started = True
    return run_job(cfg)


def main() -> None:
    """Run the command line as a Hydra app, with flatmin's exit statuses."""
    share_run_dir_under_torchrun()   # torchrun: one run directory for all ranks, written by rank 0
    try:
        hydra_main()
    except SystemExit as stop:
        if stop.code == 1 and not job_started:
            raise SystemExit(rundir.EXIT_CODES["bad input"]) from None
        raise
    except KeyboardInterrupt:                 # in Hydra's own code, before or after the job
        print("flatmin: interrupted: stopped by Ctrl-C as the job ended" if job_started else
              f"flatmin: interrupted: stopped by Ctrl-C before training started; run it again with: "
              f"{relaunch_command(sys.argv[1:])}", file=sys.stderr)
        raise SystemExit(rundir.EXIT_CODES[rundir.INTERRUPTED]) from None
