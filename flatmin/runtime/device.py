"""The device a process computes on: ``trainer.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""

from __future__ import annotations

import torch

from flatmin.errors import ConfigError

#: ``trainer.device`` beside ``cuda:N``.
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU; a CUDA device on a
    machine without one is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device is {name!r} but this machine has no CUDA device; "
                          "use trainer.device=auto or cpu.")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The kind of machine a run's seconds were measured on: the GPU's model (``NVIDIA H100 80GB HBM3``),
    or ``cpu``; the report compares seconds only between runs that name the same."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
