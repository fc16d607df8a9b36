"""Run directories found on disk, read into :class:`Run` records.

A run directory is one with ``config.yaml``, ``.hydra/`` or ``summary.json`` (see
:mod:`flatmin.rundir`); it is searched for recursively under every path given, so a sweep
directory, a folder of sweeps or a single run all work. A run's status is its ``summary.json``'s:
*completed*, *failed*, *diverged* or *interrupted* (each with its reason), or *unfinished* without
one (still running, or killed).

W&B offline runs are read through their flatmin run directory (``<run dir>/wandb/`` sits beside
``summary.json``, which holds the same numbers); a bare ``wandb/`` folder is not readable offline
(``.wandb`` files are binary protobuf records and wandb 0.31 ships no reader for them): run
``wandb sync`` and use the W&B UI.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from omegaconf import OmegaConf

from flatmin.errors import FlatminError
from flatmin.optim.registry import method_label
from flatmin import rundir
from flatmin.rundir import flatten

# Config keys that do not change a run's result (evaluating test every epoch trains the same: the
# trainer forks the generator for it), and a tuning job's place in its sweep and its drawn point (the
# point's values are set on the config itself); with the seed, they are left out of its settings.
NOT_SETTINGS = ("seed", "paths", "logger", "trainer.resume", "trainer.progress_bar", "trainer.test_every_epoch",
                "tuning.study", "tuning.trial", "tuning.reseed", "tuning.point")

WANDB_NOT_READABLE = ("W&B offline runs are read through their flatmin run directory (summary.json); a bare "
                      "wandb/ folder is not readable offline: run `wandb sync` and use the W&B UI.")


class ReportError(FlatminError):
    """The paths given to the report hold nothing it can read."""


@dataclass
class Run:
    """One run directory: its status, resolved config (flattened to dotted keys) and summary, as
    :func:`read_run` leaves them (``settings`` and ``facets`` are computed once)."""

    path: Path
    status: str                                    # a rundir status: completed, failed, diverged, …
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @cached_property
    def settings(self) -> dict[str, Any]:
        """The config values that define what was run: everything but the seed, paths and logging."""
        return {key: value for key, value in self.config.items()
                if not any(key == prefix or key.startswith(prefix + ".") for prefix in NOT_SETTINGS)}

    @cached_property
    def facets(self) -> dict[str, Any]:
        """The settings plus the names tables are laid out by: ``experiment``, ``method``, ``dataset``
        and ``model`` (the Hydra choices when the run recorded them, else read from the config).
        The method is the config option the run's optimizer settings amount to
        (:func:`flatmin.optim.method_label`: SAM with ``adaptive=true`` is ``asam``)."""
        choices = self.summary.get(rundir.CHOICES) or {}
        optimizer = {key.removeprefix("optimizer."): value for key, value in self.config.items()
                     if key.startswith("optimizer.")}
        method = method_label(optimizer) if optimizer else choices.get("optimizer")
        model = choices.get("model") or str(self.config.get("model._target_", "")).rsplit(".", 1)[-1] or None
        return {**self.settings, "experiment": choices.get("experiment"), "method": method,
                "dataset": choices.get("dataset") or self.config.get("dataset.name"), "model": model}

    def epoch_records(self) -> list[dict[str, Any]]:
        """The ``"event": "epoch"`` lines of ``metrics.jsonl`` (none if it is missing)."""
        path = self.path / rundir.METRICS
        if not path.is_file():
            return []
        records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
        return [record for record in records if record.get("event") == "epoch"]


def is_run_dir(path: Path) -> bool:
    return (path / rundir.CONFIG).is_file() or (path / rundir.SUMMARY).is_file() or (path / ".hydra").is_dir()


def read_run(path: Path) -> Run:
    """Read one run directory. Its status is its ``summary.json``'s (with the reason when it did not
    complete: failed, diverged, interrupted; a launch refused before work has a summary and no
    config), or unfinished without one; a completed run whose config cannot be read is unfinished."""
    run = Run(path, rundir.UNFINISHED)
    try:
        summary = rundir.read_summary(path)
    except (OSError, json.JSONDecodeError) as error:
        run.error = f"summary.json cannot be read ({type(error).__name__})"
        return run
    if summary is None:
        run.error = "no summary.json: still running, or stopped before the end"
    else:
        run.summary = summary
        run.status = summary.get(rundir.STATUS, rundir.UNFINISHED)
        if run.status != rundir.COMPLETED:
            run.error = summary.get(rundir.ERROR) or f"summary.json has status {run.status!r} and no error"
    try:
        config = OmegaConf.to_container(OmegaConf.load(path / rundir.CONFIG))
        run.config = {key: _hashable(value) for key, value in flatten(config, separator=".").items()}
    except Exception as error:  # missing, not YAML, not a mapping: the run is listed with the reason
        if run.status == rundir.COMPLETED:
            run.status, run.error = rundir.UNFINISHED, f"config.yaml cannot be read ({type(error).__name__})"
    return run


def find_runs(paths: Iterable[Path]) -> list[Run]:
    """Every run directory under ``paths`` (each path must hold at least one), read and sorted by path."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ReportError(f"{path} is not a directory; give run or sweep directories.")
        under = list(_run_dirs(path))
        if not under:
            if any(path.rglob("*.wandb")):
                raise ReportError(f"{path} holds no flatmin run directory. {WANDB_NOT_READABLE}")
            raise ReportError(f"No flatmin run directory under {path} (a run directory has config.yaml or "
                              "summary.json).")
        found += under
    return [read_run(path) for path in sorted(set(found))]


def _run_dirs(root: Path) -> Iterable[Path]:
    for directory, subdirectories, _ in os.walk(root):
        if is_run_dir(Path(directory)):
            subdirectories.clear()  # a run's own folders (wandb/, .hydra/) hold no further runs
            yield Path(directory)
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))


def _hashable(value: Any) -> Any:
    """Lists (e.g. model widths) as tuples, so settings can be grouped on."""
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value
