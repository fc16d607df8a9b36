"""What a method declares about itself, once: its hyperparameters and its line in the method table.

A method class (a :class:`~flatmin.optim.multipass.MultiPassOptimizer` registered with a ``key``)
lists its hyperparameters in ``hyperparameters``; from that one declaration come the constructor's
signature and its checks, the config's validation of ``optimizer.<name>`` (the same sentence), the
keys ``optimizer.schedules`` may drive, and the settings that tell the config options apart in
reports (``flatmin/optim/registry.py``). Its ``card`` is its row of the README's method table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flatmin.checks import Check


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter of a method.

    ``schedulable``: a number kept in the param groups that ``optimizer.schedules`` may set every
    step (``flatmin/optim/schedules.py``). ``structural``: it shapes the algorithm (a variant, a
    count, a switch) and is kept on the optimizer object, not in the param groups. ``grouping``:
    not a constructor argument but an instruction to ``build_optimizer``'s param grouping (ASAM's
    ``adaptive_tensors``). Anything else is a number kept in every param group.
    """

    default: Any
    check: Check
    doc: str
    schedulable: bool = False
    structural: bool = False
    grouping: bool = False


@dataclass(frozen=True)
class Card:
    """A method's row of the README's method table: what it is called, its cost and its source."""

    title: str
    passes: str
    buffers: str
    source: str
