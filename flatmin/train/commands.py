"""The commands flatmin prints to continue what stopped: one run, or a whole sweep.

A run continues with its own overrides, its directory and ``trainer.resume=auto``: from its
``last.pt`` when it has one, else from the start in the same directory, so the one command is
right either way. A sweep's job continues with the sweep's command (its ``multirun.yaml`` keeps the
overrides it was launched with), which also runs the jobs it never reached. Every command is
shell-quoted (a folder with a space, ``trainer.resume_accept=[...]``).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf

#: How the commands start: the training command's module form, which works installed and in a clone.
TRAIN = ("python", "-m", "flatmin.train")


def _without(overrides: Sequence[str], *keys: str) -> list[str]:
    return [override for override in overrides if override.split("=", 1)[0].lstrip("+~") not in keys]


def run_continue_command(overrides: Sequence[str], run_dir: Path) -> str:
    """The command that continues the run in ``run_dir`` launched with ``overrides``."""
    kept = _without(overrides, "trainer.resume", "hydra.run.dir")
    return shlex.join([*TRAIN, *kept, f"hydra.run.dir={run_dir}", "trainer.resume=auto"])


def sweep_continue_command(overrides: Sequence[str], sweep_dir: Path) -> str:
    """The command that continues the sweep in ``sweep_dir`` launched with ``overrides``: completed
    jobs do nothing, interrupted ones continue, the others run."""
    kept = _without(overrides, "trainer.resume", "hydra.sweep.dir")
    return shlex.join([*TRAIN, "-m", *kept, f"hydra.sweep.dir={sweep_dir}", "trainer.resume=auto"])


def sweep_overrides(sweep_dir: Path) -> list[str]:
    """The overrides a sweep was launched with, from the ``multirun.yaml`` Hydra saved in its directory."""
    return list(OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task)


def relaunch_command(arguments: Sequence[str]) -> str:
    """The command as it was typed (``sys.argv[1:]``), for a launch stopped before its job began."""
    return shlex.join([*TRAIN, *arguments])


def continue_command(run_dir: Path) -> str:
    """The command that continues this job: the sweep's under ``-m``, else the run's."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return run_continue_command([], run_dir)
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hydra.sweep.dir)
        return sweep_continue_command(sweep_overrides(sweep_dir), sweep_dir)
    return run_continue_command(list(hydra.overrides.task), run_dir)
