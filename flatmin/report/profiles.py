"""Performance profiles, their score and the geometric-mean speedup over per-workload times.

AlgoPerf's aggregation (mlcommons/algorithmic-efficiency @ 2c90454f), rewritten from its text. A
method's performance profile ρ_m(τ) is the fraction of workloads on which its time is within a
factor τ of the fastest method's (Dolan & Moré, 2002; DOCUMENTATION.md 500-516;
``scoring/performance_profile.py`` 353-432); its score is the profile's integral over the τ grid
divided by the grid's width, r_max − 1 on the default grid (DOCUMENTATION.md 526;
``scoring/score_submissions.py`` 178-191, called at 256); the speedup of a method over a baseline
is the geometric mean over workloads of t_baseline / t_method, a time never reached counting as the
workload's budget + 1 (DOCUMENTATION.md 537; ``scoring/compute_speedups.py`` 41-55 and 88-92).

Where flatmin parts from AlgoPerf's code:

- the cut to ∞ of times above 4 × the best is hard-coded at performance_profile.py 368, apart from
  ``max_tau``; flatmin cuts at the one ``r_max`` that also ends the τ grid (the official call passes
  ``max_tau=4.0``, score_submissions.py 238, so the two agree there);
- ρ is divided by the constant ``NUM_BASE_WORKLOADS = 8`` at performance_profile.py 423, flatmin by
  the number of workloads compared (the same when AlgoPerf's eight are present, line 378);
- ``DataFrame.update`` at performance_profile.py 394 skips NaN, so 0/0 stays 0; flatmin refuses
  times ≤ 0 (inf/inf stays inf in both: nobody reached the workload);
- the score is always the normalised integral (score_submissions.py 178 normalises, used at 256;
  performance_profile.py 435 does not by default), with ``numpy.trapezoid`` (``np.trapz`` is gone
  in numpy 2.4);
- the speedup is baseline / method as DOCUMENTATION.md 537 defines it (> 1: the method is faster),
  the inverse of the ratio compute_speedups.py 88-92 prints, and the budgets are the caller's, not
  the first competition's ``MAX_BUDGETS`` (28-38).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

# Times: times[method][workload], each inf (never reached) or a number > 0.
Times = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class Profiles:
    """``rho[method]`` = ρ_m(τ) at each τ of ``taus``; ``ratios[method][workload]`` = r_{m,w}, the
    time over the workload's best (∞: cut, or nobody reached the workload)."""

    taus: np.ndarray
    ratios: dict[str, dict[str, float]]
    rho: dict[str, np.ndarray]


def _workloads(times: Times) -> list[str]:
    """The workloads compared (in the order first seen), once every method is checked to have a
    valid time on each."""
    if not times:
        raise ValueError("there are no methods to compare")
    workloads = list(dict.fromkeys(workload for row in times.values() for workload in row))
    if not workloads:
        raise ValueError("the methods have no workloads to compare")
    for method, row in times.items():
        for workload in workloads:
            if workload not in row:
                raise ValueError(f"method {method!r} has no time for workload {workload!r}")
            if not row[workload] > 0:  # NaN fails this too
                raise ValueError(f"method {method!r} has time {row[workload]!r} on workload {workload!r}, "
                                 "where a time is inf or a number > 0")
    return workloads


def _tau_grid(taus, r_max: float) -> np.ndarray:
    """``taus`` as a float array, or AlgoPerf's grid when None, once it and ``r_max`` are checked."""
    if not (math.isfinite(r_max) and r_max > 1):
        raise ValueError(f"r_max is {r_max!r}, where it must be a finite number > 1")
    if taus is None:
        return np.linspace(1.0, r_max, 100)  # performance_profile.py 416, as score_submissions.py 237-240 calls it
    grid = np.atleast_1d(np.asarray(taus, dtype=float))
    # The trapezoid integral of an unordered or non-finite grid means nothing.
    if grid.ndim != 1 or not np.isfinite(grid).all() or (np.diff(grid) < 0).any():
        raise ValueError("taus must be a one-dimensional grid of finite numbers in increasing order")
    if len(np.unique(grid)) < 2:
        raise ValueError("taus must hold at least two distinct values")
    return grid


def performance_profiles(times: Times, taus=None, r_max: float = 4.0) -> Profiles:
    """ρ_m(τ) = |{w : r_{m,w} ≤ τ}| / |W| on ``taus`` (default ``numpy.linspace(1, r_max, 100)``), where
    r_{m,w} = t_{m,w} / min_m t_{m,w}, and ∞ when t_{m,w} > r_max · that best (performance_profile.py
    367-368, 394, 416-423)."""
    workloads = _workloads(times)
    grid = _tau_grid(taus, r_max)
    best = {workload: min(float(row[workload]) for row in times.values()) for workload in workloads}
    ratios: dict[str, dict[str, float]] = {}
    for method, row in times.items():
        ratios[method] = {}
        for workload in workloads:
            time = float(row[workload])
            # A product, as line 368 has it: a time of exactly r_max × best is kept.
            kept = math.inf if time > r_max * best[workload] else time
            ratios[method][workload] = math.inf if best[workload] == math.inf else kept / best[workload]
    rho = {method: (np.array(list(row_ratios.values()))[:, None] <= grid).sum(axis=0) / len(workloads)
           for method, row_ratios in ratios.items()}
    return Profiles(grid, ratios, rho)


def profile_scores(profiles: Profiles) -> dict[str, float]:
    """Each method's ∫ρ_m(τ)dτ over the grid divided by its width, in [0, 1], 1 for the fastest
    method on every workload (DOCUMENTATION.md 526; score_submissions.py 178-191)."""
    width = profiles.taus.max() - profiles.taus.min()
    return {method: float(np.trapezoid(rho, x=profiles.taus) / width) for method, rho in profiles.rho.items()}


def geometric_mean_speedup(times: Times, method: str, baseline: str, budgets: Mapping[str, float]) -> float:
    """exp(mean_w log(T_{baseline,w} / T_{method,w})), T = t, or ``budgets[w] + 1`` where t = ∞
    (compute_speedups.py 41-55); > 1 means ``method`` is faster (DOCUMENTATION.md 537)."""
    workloads = _workloads(times)
    for name in (method, baseline):
        if name not in times:
            raise ValueError(f"{name!r} is none of the methods compared ({', '.join(map(repr, times))})")
    for workload in workloads:
        if workload not in budgets:
            raise ValueError(f"workload {workload!r} has no budget")
        # A budget is the largest reading a workload's trials logged, so a finite number ≥ 0.
        if not (math.isfinite(budgets[workload]) and budgets[workload] >= 0):
            raise ValueError(f"workload {workload!r} has budget {budgets[workload]!r}, where it must be a "
                             "finite number >= 0")

    def charged(name: str, workload: str) -> float:
        time = float(times[name][workload])
        return budgets[workload] + 1 if time == math.inf else time

    return float(np.exp(np.mean([np.log(charged(baseline, workload) / charged(method, workload))
                                 for workload in workloads])))
