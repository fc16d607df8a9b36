"""flatmin's command line: ``python train.py [group=option ...] [key=value ...]`` (Hydra)."""

import sys

import hydra
from omegaconf import DictConfig

import flatmin.train
from flatmin import rundir
from flatmin.runtime.distributed import share_run_dir_under_torchrun
from flatmin.train.commands import relaunch_command

#: Whether Hydra composed a config and started a job: until then, Hydra's exit status 1 is its
#: refusal of the command line (a misspelt key, an unknown option), which is bad input.
job_started = False


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    global job_started
    job_started = True
    return flatmin.train.main(cfg)


if __name__ == "__main__":
    share_run_dir_under_torchrun()   # torchrun: one run directory for all ranks, written by rank 0
    try:
        main()
    except SystemExit as stop:
        if stop.code == 1 and not job_started:
            raise SystemExit(rundir.EXIT_CODES["bad input"]) from None
        raise
    except KeyboardInterrupt:                 # in Hydra's own code, before or after the job
        print("flatmin: interrupted: stopped by Ctrl-C as the job ended" if job_started else
              f"flatmin: interrupted: stopped by Ctrl-C before training started; run it again with: "
              f"{relaunch_command(sys.argv[1:])}", file=sys.stderr)
        raise SystemExit(rundir.EXIT_CODES[rundir.INTERRUPTED]) from None
