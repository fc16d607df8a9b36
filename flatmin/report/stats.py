"""Mean, standard deviation and the 95% Student-t interval of a metric over seeds, within its range."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

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
