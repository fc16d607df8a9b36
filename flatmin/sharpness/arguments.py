"""Argument rules shared by the measures: a bad argument is a ``ValueError`` of one sentence naming it,
what it must be and the value; error and accuracy exist only for targets that are class indices."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flatmin.checks import Check


def require(name: str, value: Any, check: Check) -> None:
    """``ValueError`` unless ``check(value)``."""
    if not check(value):
        raise ValueError(f"{name} must be {check.requirement} (got {value!r}).")


def class_indices(targets: Tensor) -> bool:
    """Targets that are class indices (an integer tensor), whose error or accuracy is defined."""
    return not (targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool)
