"""A run directory: its files, the statuses and keys of ``summary.json``, atomic writes, the lock,
and reading it all back.

Everything that writes or reads a run directory (the trainer, the run entry, the sweep summary,
the sharpness command, the report) goes through this module, so a file or key is named once.

* Files are written atomically: to ``<name>.tmp`` in the same directory, flushed to disk, then
  renamed over the old one (``os.replace`` is atomic on POSIX), so a crash or a full disk mid-write
  leaves the previous file whole. JSON is strict: a non-finite number is written as ``null``.
* A run holds its directory's lock (``.lock``, an exclusive ``flock``) while it runs: a second
  process on the same directory stops with a sentence naming the holder.
* Checkpoints hold only tensors and plain Python values and load with ``weights_only=True``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch

from flatmin.errors import CheckpointError, FlatminError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LAST = "last.pt"
BEST = "best.pt"
LABEL_NOISE = "label_noise.json"
LOCK = ".lock"
#: The files that mean a directory holds a run (Hydra's own ``.hydra/`` and log do not).
RUN_FILES = (CONFIG, METRICS, SUMMARY, LAST, BEST)

# summary.json's statuses ("unfinished" is a run directory without one) and its top-level keys.
COMPLETED, FAILED, DIVERGED, INTERRUPTED, UNFINISHED = "completed", "failed", "diverged", "interrupted", "unfinished"
STATUS, ERROR, FINAL, BEST_VAL, TEST = "status", "error", "final", "best_val", "test"
BEST_TEST = "best_test_over_epochs"
SHARPNESS, CHOICES, RESUMES = "sharpness", "choices", "resumes"
#: Under ``test``: the test metrics of the final model and of the best-validation model (``best.pt``).
TEST_OF_LAST, TEST_OF_BEST_VAL = "last", "best_val"
#: What the optimizer evaluates when not its training weights ("the slow weights"), and, under ``test``,
#: the test metrics of the final training weights themselves (``docs/optimizers.md``, "Evaluation weights").
EVALUATED, LAST_TRAINING_WEIGHTS = "evaluated", "last_training_weights"

#: The command line's exit status for each outcome (README, "When things go wrong").
EXIT_CODES = {COMPLETED: 0, FAILED: 1, "bad input": 2, DIVERGED: 3, INTERRUPTED: 4}
#: What an epoch record of ``metrics.jsonl`` says the run had spent by then: gradient passes (every
#: closure call, ``Stepper.passes``) and training seconds (evaluation excluded), for time-to-target.
PASSES = "passes"
TRAIN_TIME = "train_time_s"
#: summary.json: the run's device (``cpu``, ``cuda:0``) and the kind of machine it is
#: (``flatmin.runtime.device.device_name``), which the report checks before comparing seconds.
DEVICE = "device"
DEVICE_NAME = "device_name"
#: Under ``summary.json``: why a run with ``trainer.budget_seconds`` stopped before its last epoch.
BUDGET_STOP = "budget_stop"
CHECKPOINT_KEYS = ("epoch", "global_step", "model", "optimizer", "scheduler", "stepper", "rng", "trainer")


def monitor_mode(monitor: str, mode: str) -> str:
    """Whether a metric of the records is better low or high (``trainer.monitor_mode``): ``auto`` is
    ``min`` for a loss (the name's last ``/`` part), ``max`` for any other metric."""
    if mode != "auto":
        return mode
    return "min" if monitor.rsplit("/", 1)[-1] == "loss" else "max"


class RunDirError(FlatminError):
    """A run directory cannot be used: in use by another process, or holding another run."""


def strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    return value


def json_line(record: dict[str, Any]) -> str:
    """One strict JSON line (``metrics.jsonl``)."""
    return json.dumps(strict(record), allow_nan=False, default=str)


def flatten(data: dict[str, Any], prefix: str = "", separator: str = "/") -> dict[str, Any]:
    """``{"test": {"last": {"acc": 1}}}`` → ``{"test/last/acc": 1}`` (or ``test.last.acc``)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + separator, separator))
        else:
            flat[name] = value
    return flat


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` so that readers see the old file or the new one, never
    half; a full disk or a read-only folder is a :class:`RunDirError` naming the file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        reason = _write_failure(error)
        if reason:
            raise RunDirError(f"Could not write {path}: {reason}; the previous version of that file, if any, is "
                              "intact.") from error
        raise


def _write_failure(error: BaseException) -> str | None:
    """Why a write failed, when the file system refused it: an ``OSError``, or torch's serializer
    failing mid-write (``unexpected pos``), which keeps no error number."""
    if isinstance(error, OSError):
        return "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or str(error)).lower()
    if isinstance(error, RuntimeError) and "unexpected pos" in str(error):
        return "it could not be written in full (a full disk, a quota or a file-size limit)"
    return None


def unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be created and written, or None: a folder is made and removed in its
    deepest existing ancestor, as creating ``folder`` would need (for root too, on a read-only file
    system)."""
    ancestor = next((path for path in (folder, *folder.parents) if path.exists()), Path("/"))
    if not ancestor.is_dir():
        return f"{ancestor} is a file"
    try:
        os.rmdir(tempfile.mkdtemp(dir=ancestor))
    except OSError as error:
        return f"{ancestor} cannot be written ({(error.strerror or str(error)).lower()})"
    return None


def write_text(text: str, path: Path) -> None:
    """Write a text file atomically (``config.yaml``)."""
    atomic_write(path, lambda file: file.write(text.encode()))


def write_json(data: Any, path: Path) -> None:
    """Write a strict JSON file atomically (``summary.json``, ``label_noise.json``)."""
    text = json.dumps(strict(data), indent=2, allow_nan=False, default=str)
    atomic_write(path, lambda file: file.write(text.encode()))


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Save a checkpoint dict atomically."""
    atomic_write(path, lambda file: torch.save(state, file))


def load_checkpoint(path: Path, required: tuple[str, ...] = CHECKPOINT_KEYS) -> dict[str, Any]:
    """Load a checkpoint on the CPU; a missing, truncated, corrupt or foreign file raises
    :class:`CheckpointError` with one sentence instead of a traceback from ``torch.load``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"Checkpoint {path} cannot be read ({type(error).__name__}): it is truncated or corrupt; "
            "resume from another checkpoint or start a new run.") from error
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"Checkpoint {path} is not a flatmin checkpoint of this kind "
                              f"(missing {', '.join(missing)}).")
    return state


def resumed_run_dir(target: str | Path) -> Path:
    """The run directory of a ``trainer.resume`` path: the directory itself, or a checkpoint's folder."""
    path = Path(target)
    return path if path.is_dir() else path.parent


def holds_run(path: Path) -> bool:
    """Whether ``path`` holds a run (any of :data:`RUN_FILES`)."""
    return any((Path(path) / name).exists() for name in RUN_FILES)


def read_summary(path: Path) -> dict[str, Any] | None:
    """A run directory's ``summary.json``, or None when there is none (an unfinished run)."""
    file = Path(path) / SUMMARY
    return json.loads(file.read_text()) if file.is_file() else None


def status(path: Path) -> str:
    """The run's status: its summary's, or ``unfinished`` without one."""
    summary = read_summary(path)
    return UNFINISHED if summary is None else summary.get(STATUS, UNFINISHED)


def in_use(path: Path, holder: str) -> RunDirError:
    """The sentence for a run directory another live process holds."""
    return RunDirError(f"Run directory {path} is in use by {holder}; wait for it to end, or give this run another "
                       "directory.")


def lock_holder(path: Path) -> str | None:
    """Who holds the run directory's lock (``process <pid>``), or None when no live process does."""
    lock = Path(path) / LOCK
    if not lock.is_file():
        return None
    with open(lock, "a+") as handle:
        holder = _take_lock(handle)
        if holder is None:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return holder


def _take_lock(handle: IO[str]) -> str | None:
    """Lock the open lock file without waiting; None when taken, else who holds it (``process <pid>``)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        return handle.read().strip() or "another process"
    return None


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the run directory's lock for the duration; a directory another live process holds is a
    :class:`RunDirError` (the lock goes with the process, so a killed run leaves none behind)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / LOCK, "a+")
    if (holder := _take_lock(handle)) is not None:
        handle.close()
        raise in_use(path, holder)
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()}")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
