"""Run files written atomically, and checkpoints read back with a clear error when they are bad.

A file is written to ``<name>.tmp`` in the same directory, flushed to disk, then renamed over the
old one (``os.replace`` is atomic on POSIX): a crash mid-write leaves the previous checkpoint
whole. Checkpoints hold only tensors and plain Python values and load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, IO

import torch

from flatmin.errors import CheckpointError

CHECKPOINT_KEYS = ("epoch", "global_step", "model", "optimizer", "scheduler", "stepper", "rng", "trainer")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Save a checkpoint dict atomically."""
    atomic_write(path, lambda file: torch.save(state, file))


def write_json(data: Any, path: Path) -> None:
    """Write a JSON file atomically (``summary.json``)."""
    atomic_write(path, lambda file: file.write(json.dumps(data, indent=2, default=str).encode()))


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
