"""What a method declares about itself, once: its hyperparameters, what it needs of the rest of its
config, and its line in the method table.

A method class (a :class:`~flatmin.optim.multipass.MultiPassOptimizer` registered with a ``key``)
lists its hyperparameters in ``hyperparameters``; from that one declaration come the constructor's
signature and its checks, the config's validation of ``optimizer.<name>`` (the same sentence), the
keys ``optimizer.schedules`` may drive, and the settings that tell the config options apart in
reports (``flatmin/optim/registry.py``). Its ``requirements`` are checked against the whole
``optimizer`` config before anything is built (``flatmin/optim/settings.py``), its
``batch_requirements`` against the batch size too (``flatmin/validation.py``). Its ``card`` is its
row of the README's method table.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Callable

from flatmin.checks import BOOLEAN, NON_NEGATIVE, Check, one_of


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter of a method.

    ``schedulable``: a number kept in the param groups that ``optimizer.schedules`` may set every
    step (``flatmin/optim/hyper_schedule.py``). ``structural``: it shapes the algorithm (a variant, a
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
class Requirement:
    """What a method needs of the rest of its ``optimizer`` config (the base optimizer, a shared
    setting): ``problem(settings)`` is None when the settings meet it, else the sentence that says
    what is wrong, as its constructor would refuse it (MSAM needs a base with a first moment)."""

    problem: Callable[[Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class BatchRequirement:
    """What a method needs of the micro-batches it steps on (bSAM: rows divisible by ``batch_split``),
    checked from the config (``dataset.batch_size``: the trainer steps on full micro-batches only)
    before anything is built: ``problem(settings, rows)`` is None when a batch of ``rows`` rows meets
    it, else the sentence its ``step`` would raise."""

    problem: Callable[[Mapping[str, Any], int], str | None]


@dataclass(frozen=True)
class Card:
    """A method's row of the README's method table: what it is called, its cost and its source."""

    title: str
    passes: str
    buffers: str
    source: str


#: ASAM's scale-invariant ball (Kwon et al., ICML 2021), ``e = rho·T²⊙g/‖T⊙g‖`` with
#: ``T = |θ| + eta``, for every method that offers it (``MultiPassOptimizer.ascend_in_ball``).
ADAPTIVE_BALL = {
    "adaptive": Hyper(False, BOOLEAN, "ASAM's ball: the scale T = |θ| + eta", structural=True),
    "eta": Hyper(0.01, NON_NEGATIVE, "ASAM: the offset in T = |θ| + eta", schedulable=True),
    "adaptive_tensors": Hyper("weights", one_of("weights", "all"),
                              "ASAM: the tensors scaled, weights (official ASAM code: biases exempt) or all "
                              "(the single-file ASAM and the GSAM, WSAM, F-SAM and SAM-ON releases)", grouping=True),
}
