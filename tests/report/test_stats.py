"""Mean, sample std and the Student-t interval, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

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
