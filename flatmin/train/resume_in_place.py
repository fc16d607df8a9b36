"""A Hydra callback that keeps a launch into an existing run inside that run's directory.

Hydra makes the job's directory, writes its record (``.hydra/``) there and starts the job's log
file before flatmin's code runs. For ``trainer.resume=<run dir or checkpoint>`` that directory
would be a new one under ``outputs/runs/``, holding the resumed part's log (the run's own log
stopping at the interruption) and, for a refused resume, nothing but Hydra's files; into a fixed
``hydra.run.dir`` that holds a run, Hydra would overwrite the run's first record. This callback,
registered in ``flatmin/conf/hydra/default.yaml``, moves the job into the run's directory, so its log
continues in the run's ``train.log``, and puts Hydra's record of this launch beside the first one,
in ``.hydra/resumes/<time>/`` (removed again when flatmin refuses the launch: ``train.run.refuse``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from flatmin import rundir

#: Where Hydra's record of each later launch into a run goes, under the run directory.
RESUME_RECORDS = ".hydra/resumes"


class ResumeInPlace(Callback):
    """For a single run (a sweep's jobs keep their numbered directories); a torchrun rank that writes
    no record (``hydra.output_subdir=null``) still writes none."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        resume = config.trainer.get("resume")
        resumed = rundir.resumed_run_dir(resume) if resume not in (None, "auto") and Path(resume).exists() else None
        with read_write(config.hydra):
            if resumed is not None and rundir.holds_run(resumed):     # else flatmin refuses it in Hydra's folder
                config.hydra.run.dir = str(resumed)
            if config.hydra.output_subdir is not None and rundir.holds_run(Path(config.hydra.run.dir)):
                config.hydra.output_subdir = f"{RESUME_RECORDS}/{datetime.now():%Y-%m-%d_%H-%M-%S_%f}"
