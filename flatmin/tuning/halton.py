"""AlgoPerf's quasirandom draws of hyperparameter points (scrambled Halton), seeded.

AlgoPerf's external tuning runs S studies of N trials each, and its rules (DOCUMENTATION.md 412)
"draw 15 hyperparameter configurations from this search space using (quasi)random search and randomly
assign them to the 3 studies": S×N points of a scrambled Halton sequence (arXiv:1706.03200), shuffled,
then cut into S studies of N consecutive points. :func:`draw_trials` computes the same points as
AlgoPerf's ``algoperf/halton.py`` (mlcommons/algorithmic-efficiency @ 2c90454f), rewritten from its text:

* one dimension per key of the space, in its order; dimension k takes the k-th of the d odd primes just
  below the largest one under 1000 as its base (halton.py 172-178);
* each dimension is a Van der Corput sequence in its base whose nonzero digits are permuted, then
  shifted modulo 1; permutation and shift come from ``RandomState(base)`` (halton.py 39-91);
* the first 100 points are skipped (halton.py 180-196), the points shuffled (199-205) and each
  coordinate mapped onto its range: log, linear or a list of feasible points (halton.py 208-233).

Where flatmin departs from AlgoPerf's code:

* halton.py 204 shuffles with numpy's unseeded global generator, so AlgoPerf's trial order is not
  reproducible; flatmin shuffles with ``RandomState(seed)`` and never touches the global generator.
  The result equals AlgoPerf's after ``numpy.random.seed(seed)``.
* submission_runner.py 657-658 calls ``generate_search(space, N)`` for every study, so every study gets
  the same N points; flatmin draws S×N points, as DOCUMENTATION.md 412 says.
* DOCUMENTATION.md 413's fixed list of points (halton.py 384-394) has no counterpart here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral
from typing import Any

from numpy.random import RandomState

from flatmin.errors import ConfigError
from flatmin.optim.hyper import Search

#: The leading points of every dimension that are dropped, for their correlations (halton.py 100).
SKIPPED_POINTS = 100

#: The bases on offer: the odd primes below 1000. The largest is never used (halton.py 178).
ODD_PRIMES = tuple(n for n in range(3, 1000, 2) if all(n % factor for factor in range(3, math.isqrt(n) + 1, 2)))

#: The most dimensions a space may have: one per base.
MAX_DIMENSIONS = len(ODD_PRIMES) - 1


def draw_trials(space: Mapping[str, Mapping[str, Any]], trials: int, studies: int = 1,
                seed: int = 0) -> list[list[dict[str, Any]]]:
    """``studies`` lists of ``trials`` points of ``space``, indexed ``[study][trial]``; each point is
    ``{key: value}`` in the space's order. Study j holds points j·trials … j·trials + trials − 1 of the
    studies × trials points shuffled with ``seed``. A bad input is a :class:`ConfigError`."""
    check_counts(trials, studies, seed)
    check_space(space)
    count = studies * trials
    bases = ODD_PRIMES[-len(space) - 1:-1]
    columns = [scrambled_sequence(base, SKIPPED_POINTS + count)[SKIPPED_POINTS:] for base in bases]
    points = list(zip(*columns))
    RandomState(seed).shuffle(points)
    drawn = [{key: value_at(form, x) for (key, form), x in zip(space.items(), point)} for point in points]
    return [drawn[study * trials:(study + 1) * trials] for study in range(studies)]


def scrambled_sequence(base: int, count: int) -> list[float]:
    """Points 1 … ``count`` of one dimension: the radical inverse in ``base`` with its nonzero digits
    permuted, plus a shift, modulo 1; both drawn from ``RandomState(base)``, the shift after the
    permutation."""
    rng = RandomState(base)
    nonzero_digits = list(range(1, base))
    rng.shuffle(nonzero_digits)
    digit_image = [0, *nonzero_digits]
    shift = rng.random_sample()
    sequence = []
    for index in range(1, count + 1):
        x, denominator = 0.0, base
        while index:
            x += digit_image[index % base] / denominator
            denominator *= base
            index //= base
        sequence.append(math.fmod(x + shift, 1.0))
    return sequence


def value_at(form: Mapping[str, Any], x: float) -> Any:
    """The value of a range at the coordinate ``x`` in [0, 1)."""
    if "feasible_points" in form:
        points = form["feasible_points"]
        return points[int(math.floor(x * len(points)))]
    low, high = form["min"], form["max"]
    if form["scaling"] == "log":
        return low * math.exp(x * math.log(high / low))
    return x * (high - low) + low


def check_counts(trials: Any, studies: Any, seed: Any) -> None:
    for name, count in (("trials", trials), ("studies", studies)):
        if not is_integer(count) or count < 1:
            raise ConfigError(f"{name} (tuning.{name}) must be an integer ≥ 1, got {count!r}.")
    if not is_integer(seed) or not 0 <= seed < 2**32:
        raise ConfigError(f"the draws' seed (tuning.seed) must be an integer in [0, 2**32), got {seed!r}.")


def check_space(space: Any) -> None:
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"the search space must map at least one key to a range, got {space!r}.")
    if len(space) > MAX_DIMENSIONS:
        raise ConfigError(f"the search space has {len(space)} keys, more than the {MAX_DIMENSIONS} "
                          "dimensions the Halton draws have bases for.")
    for key, form in space.items():
        problem = form_problem(form)
        if problem:
            raise ConfigError(f"the search range of {key} must be {problem}, got {form!r}.")


def form_problem(form: Any) -> str | None:
    """What is wrong with one range in AlgoPerf's forms, in words, or None."""
    if not isinstance(form, Mapping) or set(form) not in ({"feasible_points"}, {"min", "max", "scaling"}):
        return "{min, max, scaling} or {feasible_points: [...]}"
    points = form.get("feasible_points")
    if points is not None and not isinstance(points, (list, tuple)):
        return "a non-empty list of feasible_points"
    return Search(**{**form, **({"feasible_points": tuple(points)} if points is not None else {})}).problem()


def is_integer(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)
