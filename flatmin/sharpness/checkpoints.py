"""A run's config and checkpoint, and the model at the far end of an interpolation (another run's weights
in a copy of this run's model)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from flatmin.errors import CheckpointError
from flatmin.rundir import load_checkpoint


def load_run(path: Path, checkpoint: str = "last") -> tuple[DictConfig, Path, dict[str, Any]]:
    """The config, checkpoint path and checkpoint of a run. ``path`` is a run directory (its
    ``<checkpoint>.pt`` is used) or a checkpoint file; the config is the ``config.yaml`` beside the
    checkpoint, else the one a ``last.pt`` carries. Anything missing or unreadable is a
    ``CheckpointError``."""
    checkpoint_path, state = _read(Path(path), checkpoint)
    config_path = checkpoint_path.parent / "config.yaml"
    if config_path.is_file():
        return OmegaConf.load(config_path), checkpoint_path, state
    if isinstance(state.get("config"), dict):
        return OmegaConf.create(state["config"]), checkpoint_path, state
    raise CheckpointError(f"No config.yaml beside {checkpoint_path}, and the checkpoint carries none: the model "
                          "cannot be rebuilt without the run's config.")


def load_other(path: Path | str, model: nn.Module, checkpoint: str = "last") -> tuple[nn.Module, Path]:
    """The weights of the run directory or checkpoint ``path`` in a copy of ``model`` (this run's model
    config), and the checkpoint they came from; a ``CheckpointError`` when they are missing or do not
    fit (another model)."""
    checkpoint_path, state = _read(Path(path), checkpoint)
    other = copy.deepcopy(model)
    try:
        other.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"trainer.sharpness_interpolate_to={str(path)!r} holds another model than this run's "
                              f"{type(model).__name__} ({str(error).splitlines()[0]}).") from error
    return other, checkpoint_path


def _read(path: Path, checkpoint: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint file ``path`` names (a run directory's ``<checkpoint>.pt``) and its contents."""
    if not path.exists():
        raise CheckpointError(f"No run directory or checkpoint at {path}.")
    checkpoint_path = path / f"{checkpoint}.pt" if path.is_dir() else path
    return checkpoint_path, load_checkpoint(checkpoint_path, required=("model",))
