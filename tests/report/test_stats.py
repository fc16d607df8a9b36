"""Mean, sample std and the Student-t interval, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from flatmin.report.published import Metric
from flatmin.report.stats import summarise

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
