"""A Hydra callback that refuses a run or sweep directory that cannot be written, before Hydra makes it.

Hydra creates the job's directory (``hydra.run.dir``, or ``hydra.sweep.dir`` for a sweep) before
flatmin's code runs, so a ``paths.log_dir`` on a read-only file system, under a file, or anywhere
this process may not write would end in Hydra's traceback. This callback, registered in
``flatmin/conf/hydra/default.yaml``, tries the folder first: where it cannot be written it prints one
sentence naming it and exits with the bad-input status (``rundir.EXIT_CODES``), writing nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from flatmin import rundir


def refuse_unwritable(folder: str) -> None:
    """Exit with one sentence when ``folder`` cannot be written."""
    reason = rundir.unwritable(Path(folder).absolute())
    if reason is not None:
        print(f"flatmin: error: the run directory {folder} cannot be made: {reason}; point paths.log_dir (or "
              "hydra.run.dir, hydra.sweep.dir) at a folder this process may write.", file=sys.stderr)
        raise SystemExit(rundir.EXIT_CODES["bad input"])


class WritableOutput(Callback):
    """Checks ``hydra.run.dir`` before a run, ``hydra.sweep.dir`` before a sweep."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unwritable(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unwritable(config.hydra.sweep.dir)
