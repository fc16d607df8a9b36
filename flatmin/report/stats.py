"""Mean, standard deviation and the 95% Student-t interval of a metric over seeds, within its range;
paired differences between two methods run on the same seeds, with the Wilcoxon signed-rank test."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

from scipy import stats


@dataclass(frozen=True)
class Summary:
    """``n`` values summarised; ``std`` and the interval need at least two values (else None)."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None


def summarise(values: Sequence[float], confidence: float = 0.95,
              bounds: tuple[float, float] = (-math.inf, math.inf)) -> Summary:
    """Mean, sample standard deviation (n−1) and the ``confidence`` interval of the mean,
    ``mean ± t_{(1+confidence)/2, n−1} · std / √n`` (Student, 1908), cut to the metric's range
    ``bounds`` (the mean lies in it, so the cut interval covers it as often: an accuracy interval
    never passes 100%)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return Summary(n, mean, None, None, None)
    std = statistics.stdev(values)  # exact arithmetic: equal values give exactly 0
    half_width = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    low, high = bounds
    return Summary(n, mean, std, max(mean - half_width, low), min(mean + half_width, high))


@dataclass(frozen=True)
class Paired:
    """The differences d_s = a_s − b_s over the ``seeds`` both sides ran (sorted): ``n``, their mean,
    sample std and interval (None below two pairs), the two-sided Wilcoxon p-value; ``unpaired``: the
    seeds only one side ran (sorted)."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    wilcoxon_p: float
    seeds: tuple[Hashable, ...]
    unpaired: tuple[Hashable, ...]


def paired_differences(a: Mapping[Hashable, float], b: Mapping[Hashable, float],
                       confidence: float = 0.95) -> Paired:
    """``a`` and ``b`` map seed → finite value. Mean, sample std (n−1) and ``confidence`` t-interval of
    the paired differences as :func:`summarise` has them (Student, 1908), and
    ``scipy.stats.wilcoxon(d).pvalue`` with scipy's defaults (two-sided; Wilcoxon, 1945), 1.0 when every
    d = 0 (scipy drops zero differences and would divide 0 by 0). One pair gives scipy's exact p, 1.0:
    under the null its sign is either way with probability ½."""
    for side, values in (("a", a), ("b", b)):
        for seed, value in values.items():
            if not math.isfinite(value):
                raise ValueError(f"{side} has value {value!r} for seed {seed!r}, where every value must be finite")
    seeds = tuple(sorted(a.keys() & b.keys()))
    if not seeds:
        raise ValueError("a and b have no seed in common to pair")
    differences = [a[seed] - b[seed] for seed in seeds]
    summary = summarise(differences, confidence)
    all_zero = all(difference == 0 for difference in differences)
    wilcoxon_p = 1.0 if all_zero else float(stats.wilcoxon(differences).pvalue)
    return Paired(summary.n, summary.mean, summary.std, summary.ci_low, summary.ci_high, wilcoxon_p, seeds,
                  tuple(sorted(a.keys() ^ b.keys())))
