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

from flatmin.checks import BOOLEAN, NON_NEGATIVE, Check, is_number, one_of


@dataclass(frozen=True)
class Search:
    """Where a tuning protocol draws a hyperparameter (``docs/optimizers.md``, "Search spaces"), in one of
    three forms: ``min < max`` on a ``log`` (min > 0) or ``linear`` scale; ``feasible_points``, the values
    allowed; or ``around > 1``, log-uniform over ``[v/around, v·around]`` about the option's configured
    value ``v > 0``. The first two are AlgoPerf's search-space forms (mlcommons/algorithmic-efficiency,
    ``algoperf/halton.py``); ``around`` becomes the first at the configured value."""

    min: float | None = None
    max: float | None = None
    scaling: str = "log"
    feasible_points: tuple[Any, ...] | None = None
    around: float | None = None

    def problem(self) -> str | None:
        """None for a valid form, else what is wrong, in words that complete "... must be"."""
        forms = [self.min is not None or self.max is not None, self.feasible_points is not None,
                 self.around is not None]
        if forms.count(True) != 1:
            return "exactly one of min/max, feasible_points or around"
        if self.feasible_points is not None:
            return None if len(self.feasible_points) else "a non-empty list of feasible_points"
        if self.around is not None:
            return None if is_number(self.around) and self.around > 1 else "around > 1"
        if not (is_number(self.min) and is_number(self.max)):
            return "a finite number min and max"
        if self.min >= self.max:
            return "min < max"
        if self.scaling not in ("log", "linear"):
            return "scaling log or linear"
        return None if self.scaling == "linear" or self.min > 0 else "min > 0 on a log scale"

    def form(self, value: Any) -> dict[str, Any]:
        """AlgoPerf's form of this range for a hyperparameter configured at ``value``: ``{"min", "max",
        "scaling"}`` or ``{"feasible_points": [...]}``; ``around`` needs ``value > 0`` (a ``ValueError``
        otherwise)."""
        if self.feasible_points is not None:
            return {"feasible_points": list(self.feasible_points)}
        if self.around is not None:
            if not (is_number(value) and value > 0):
                raise ValueError(f"a range around the configured value needs a value > 0 (got {value!r})")
            return {"min": value / self.around, "max": value * self.around, "scaling": "log"}
        return {"min": self.min, "max": self.max, "scaling": self.scaling}


#: The radius of every method (``rho``, ``rho_p``, ``sigma``: what its options schedule) and the
#: learning rate: a decade either side of the configured value.
AROUND_TENFOLD = Search(around=10)


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter of a method.

    ``schedulable``: a number kept in the param groups that ``optimizer.schedules`` may set every
    step (``flatmin/optim/hyper_schedule.py``). ``structural``: it shapes the algorithm (a variant, a
    count, a switch) and is kept on the optimizer object, not in the param groups. ``grouping``:
    not a constructor argument but an instruction to ``build_optimizer``'s param grouping (ASAM's
    ``adaptive_tensors``). Anything else is a number kept in every param group. ``search``: where a
    tuning protocol draws it (``flatmin.tuning.search_space``); None: it is not tuned by default.
    """

    default: Any
    check: Check
    doc: str
    schedulable: bool = False
    structural: bool = False
    grouping: bool = False
    search: Search | None = None


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
