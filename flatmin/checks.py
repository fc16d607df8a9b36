"""Checks of a value, each with the words that say what the value must be.

The config's rules (:mod:`flatmin.validation`), the optimizer settings every option shares
(:mod:`flatmin.optim.settings`) and the methods' declared hyperparameters (:mod:`flatmin.optim.hyper`)
share them, so a bad value gives the same sentence wherever it is caught: ``optimizer.rho must be a
number >= 0 (got -0.05).``
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class Check:
    """A test of a value and its ``requirement``, the words that complete "must be …"."""

    test: Callable[[Any], bool]
    requirement: str

    def __call__(self, value: Any) -> bool:
        return self.test(value)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


NUMBER = Check(is_number, "a number")
POSITIVE = Check(lambda v: is_number(v) and v > 0, "a number > 0")
NON_NEGATIVE = Check(lambda v: is_number(v) and v >= 0, "a number >= 0")
FRACTION = Check(lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)")
UNIT_INTERVAL = Check(lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]")
POSITIVE_INT = Check(lambda v: is_int(v) and v > 0, "a positive integer")
NON_NEGATIVE_INT = Check(lambda v: is_int(v) and v >= 0, "a non-negative integer")
BOOLEAN = Check(lambda v: isinstance(v, bool), "true or false")
TEXT = Check(lambda v: isinstance(v, str) and v != "", "a non-empty string")
#: Adam's ``betas`` (and bSAM's): the decays of its two moments.
BETAS = Check(lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 2
              and all(FRACTION(b) for b in v),
              "two numbers in [0, 1)")
MAPPING = Check(lambda v: isinstance(v, Mapping), "a mapping")


def list_of(check: Check, requirement: str) -> Check:
    """A list (or tuple) whose every item ``check`` accepts."""
    return Check(lambda value: isinstance(value, Sequence) and not isinstance(value, str)
                 and all(check(item) for item in value), requirement)


def one_of(*choices: str, requirement: str | None = None) -> Check:
    """One of ``choices``; the requirement lists them unless given."""
    return Check(lambda value: value in choices, requirement or f"one of {', '.join(choices)}")


def optional(check: Check) -> Check:
    """None or what ``check`` accepts."""
    return Check(lambda value: value is None or check(value), f"null or {check.requirement}")


def listing(names: Iterable[str]) -> str:
    """``a, b, c`` sorted, for sentences that list the valid names."""
    return ", ".join(sorted(names))
