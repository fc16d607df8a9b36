"""Mean, sample std and the Student-t interval, and paired differences with the Wilcoxon test, against
values worked out by hand."""

from __future__ import annotations

import math
import warnings

import pytest
from scipy import stats

from flatmin.report.published import Metric
from flatmin.report.stats import paired_differences, summarise

T_975 = {1: 12.706204736174698, 2: 4.302652729749464, 4: 2.7764451051977987}  # t_{0.975, df}


def test_three_values():
    summary = summarise([3.0, 2.8, 3.2])
    half = T_975[2] * 0.2 / math.sqrt(3)
    assert (summary.n, summary.mean, summary.std) == (3, pytest.approx(3.0), pytest.approx(0.2))
    assert (summary.ci_low, summary.ci_high) == (pytest.approx(3.0 - half), pytest.approx(3.0 + half))


def test_two_and_five_values():
    two = summarise([3.5, 3.3])
    assert two.std == pytest.approx(math.sqrt(0.02))
    assert two.ci_high - two.mean == pytest.approx(T_975[1] * math.sqrt(0.02) / math.sqrt(2))
    five = summarise([1.0, 2.0, 3.0, 4.0, 5.0])
    assert five.std == pytest.approx(math.sqrt(2.5))
    assert five.mean - five.ci_low == pytest.approx(T_975[4] * math.sqrt(2.5) / math.sqrt(5))


def test_one_value_has_no_spread_and_equal_values_have_none_either():
    one = summarise([0.7])
    assert (one.n, one.mean, one.std, one.ci_low, one.ci_high) == (1, 0.7, None, None, None)
    same = summarise([0.2, 0.2, 0.2])
    assert same.std == 0.0 and same.ci_low == same.ci_high == same.mean


def test_an_interval_never_leaves_the_metrics_range():
    accuracy = Metric("accuracy (%)", ("test", "best_val", "test/accuracy"), 100.0)
    error = Metric("error (%)", ("test", "best_val", "test/accuracy"), -100.0, 100.0)
    assert accuracy.bounds == (0.0, 100.0) and error.bounds == (0.0, 100.0)
    cut = summarise([98.72, 99.89], bounds=accuracy.bounds)
    plain = summarise([98.72, 99.89])
    assert plain.ci_high > 100.0 and cut.ci_high == 100.0 and cut.ci_low == plain.ci_low
    assert Metric("trace", ("sharpness", "trace")).bounds == (-math.inf, math.inf)
    assert Metric("mcc", ("final", "val/mcc"), 100.0).bounds == (-100.0, 100.0)


def test_paired_differences_over_the_common_seeds():
    sam = {0: 96.1, 1: 96.4, 2: 95.9, 3: 96.3, 7: 95.0}
    sgd = {0: 95.6, 1: 95.8, 2: 96.0, 3: 95.5, 5: 94.0}
    paired = paired_differences(sam, sgd)
    differences = [0.5, 0.6, -0.1, 0.8]  # seeds 0-3, sam − sgd
    mean = sum(differences) / 4
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / 3)
    half = stats.t.ppf(0.975, 3) * std / math.sqrt(4)
    assert (paired.n, paired.seeds, paired.unpaired) == (4, (0, 1, 2, 3), (5, 7))
    assert (paired.mean, paired.std) == (pytest.approx(mean), pytest.approx(std))
    assert (paired.ci_low, paired.ci_high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    # Ranks of |d|: 0.1 → 1, 0.5 → 2, 0.6 → 3, 0.8 → 4; W = min(2 + 3 + 4, 1) = 1; exact two-sided
    # p = 2 · P(W ≤ 1) = 2 · 2/16 (the sign patterns with rank sum 0 or 1).
    assert paired.wilcoxon_p == pytest.approx(0.25) == stats.wilcoxon(differences).pvalue
    wide = paired_differences(sam, sgd, confidence=0.99)
    assert wide.ci_high - wide.mean == pytest.approx(stats.t.ppf(0.995, 3) * std / 2)


def test_equal_sides_differ_by_zero_with_p_one():
    values = {1: 0.2, 2: 0.3, 3: 0.4}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy would warn (0/0) on all-zero differences
        paired = paired_differences(values, dict(values))
    assert (paired.mean, paired.std, paired.ci_low, paired.ci_high, paired.wilcoxon_p) == (0.0, 0.0, 0.0, 0.0, 1.0)


def test_one_pair_has_a_mean_no_spread_and_p_one():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paired = paired_differences({4: 0.9, 5: 0.8}, {4: 0.7})
        zero = paired_differences({4: 0.9}, {4: 0.9})
    assert (paired.n, paired.std, paired.ci_low, paired.ci_high) == (1, None, None, None)
    assert paired.mean == pytest.approx(0.2) and paired.unpaired == (5,)
    assert paired.wilcoxon_p == 1.0 and zero.wilcoxon_p == 1.0


@pytest.mark.parametrize("a, b, message", [
    ({0: math.nan, 1: 1.0}, {0: 1.0, 1: 2.0}, "a has value nan for seed 0, where every value must be finite"),
    ({0: 1.0}, {0: 1.0, 3: math.inf}, "b has value inf for seed 3"),
    ({0: 1.0}, {1: 1.0}, "a and b have no seed in common to pair"),
])
def test_refused_pairs(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_differences(a, b)
