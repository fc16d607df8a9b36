"""Performance profiles, their score and the speedup against a restatement of AlgoPerf's scoring code
(mlcommons/algorithmic-efficiency @ 2c90454f) with pandas, as it has them, on synthetic time tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from flatmin.report.profiles import Profiles, geometric_mean_speedup, performance_profiles, profile_scores

INF = math.inf
NUM_BASE_WORKLOADS = 8  # performance_profile.py 62
EIGHT = [f"w{index}" for index in range(NUM_BASE_WORKLOADS)]


def algoperf_profiles(times: dict[str, dict[str, float]], max_tau: float = 4.0, num_points: int = 100) -> pd.DataFrame:
    """``compute_performance_profiles`` (performance_profile.py 291-432) from the table of per-workload
    times ``get_workloads_time_to_target`` gives (a row per submission, a column per workload,
    269-271), with ``min_tau=1.0``, ``reference_submission_tag=None`` and ``scale='linear'``, as
    score_submissions.py 234-246 calls it. Every workload is a base workload and none held out, so
    the variant filters (357-364, 370-377) change nothing and line 378 keeps every column. Kept:
    the cut at 4 × best whatever ``max_tau`` (368), ``DataFrame.update`` (394) and the division by
    8 (423)."""
    table = pd.DataFrame.from_dict(times, orient="index")
    table = table.reindex(sorted(table.columns), axis=1)
    best = table.min(axis=0)
    table[table.apply(lambda row: row > 4 * best, axis=1)] = np.inf
    table.update(table.div(table.min(axis=0), axis=1))
    taus = np.linspace(1.0, max_tau, num=num_points)
    profiles = pd.concat([(table <= tau).sum(axis=1) / NUM_BASE_WORKLOADS for tau in taus], axis=1)
    profiles.columns = taus
    return profiles


def algoperf_scores(profiles: pd.DataFrame) -> pd.Series:
    """``compute_leaderboard_score(df, normalize=True)`` (score_submissions.py 178-191), with
    ``np.trapezoid`` for the ``np.trapz`` numpy 2.4 no longer has."""
    taus = profiles.columns
    return pd.Series(np.trapezoid(profiles, x=taus) / (taus.max() - taus.min()), index=profiles.index)


def algoperf_speedup(times: dict[str, dict[str, float]], base: str, comparison: str,
                     max_budgets: dict[str, float]) -> float:
    """``compute_speedup`` (compute_speedups.py 58-97) from the two submissions' per-workload times,
    external tuning ruleset (factor 1, line 52): workloads × submissions (79), ∞ replaced by the
    budget + 1 (41-55, 85), comparison / base (88-90) and its geometric mean (92)."""
    merged = pd.DataFrame.from_dict({name: times[name] for name in (base, comparison)}, orient="index").transpose()
    merged = merged.apply(lambda row: row.replace(np.inf, max_budgets[row.name] + 1), axis=1)
    return float(stats.gmean((merged[comparison] / merged[base]).to_numpy()))


def assert_matches_algoperf(times, profiles: Profiles, max_tau: float = 4.0, num_points: int = 100) -> None:
    """ρ(τ) and the scores equal AlgoPerf's to 1e-12, ρ scaled by 8 / |W| (its division by the constant 8)."""
    expected = algoperf_profiles(times, max_tau, num_points)
    scale = NUM_BASE_WORKLOADS / len(next(iter(times.values())))
    np.testing.assert_allclose(profiles.taus, expected.columns.to_numpy(), rtol=0, atol=1e-12)
    for method in times:
        np.testing.assert_allclose(profiles.rho[method], scale * expected.loc[method].to_numpy(), rtol=0, atol=1e-12)
    scores, expected_scores = profile_scores(profiles), algoperf_scores(expected)
    for method in times:
        assert scores[method] == pytest.approx(scale * expected_scores[method], rel=0, abs=1e-12)


def table(**rows: list[float]) -> dict[str, dict[str, float]]:
    """Times of each method on the eight workloads w0 … w7."""
    return {method: dict(zip(EIGHT, row, strict=True)) for method, row in rows.items()}


def test_ties_the_cut_at_exactly_four_times_the_best_and_a_workload_nobody_reached():
    four_times = 4 * 2.5
    times = table(sgd=[2.5, 3.0, 7.0, INF, 1.0, 12.0, 5.0, 0.5],
                  sam=[four_times, 3.0, 7.0, INF, INF, 3.0, 5.5, 0.25],
                  gam=[np.nextafter(four_times, INF), 6.0, 14.0, INF, 2.0, 48.0, 10.0, 1.0])
    profiles = performance_profiles(times)
    assert profiles.ratios["sam"]["w0"] == 4.0 and profiles.ratios["gam"]["w0"] == INF
    assert profiles.ratios["sgd"]["w1"] == profiles.ratios["sam"]["w1"] == 1.0
    assert all(profiles.ratios[method]["w3"] == INF for method in times)
    assert profiles.ratios["gam"]["w5"] == INF and profiles.ratios["sgd"]["w5"] == 4.0
    assert profiles.rho["sam"][-1] == 6 / 8 and profiles.rho["gam"][0] == 0.0
    assert_matches_algoperf(times, profiles)


def test_several_methods_on_random_tables():
    rng = np.random.default_rng(20250905)
    for _ in range(5):
        draws = rng.uniform(1.0, 30.0, size=(6, 8))
        draws[rng.uniform(size=draws.shape) < 0.2] = INF
        times = {f"method{row}": dict(zip(EIGHT, draws[row])) for row in range(len(draws))}
        assert_matches_algoperf(times, performance_profiles(times))


def test_the_fastest_method_everywhere_scores_one():
    times = table(fast=[1.0] * 8, slow=[2.0, 3.0, 4.0, 5.0, INF, 1.5, 1.0, 2.0])
    scores = profile_scores(performance_profiles(times))
    assert scores["fast"] == 1.0 and 0 < scores["slow"] < 1
    assert_matches_algoperf(times, performance_profiles(times))


def test_a_single_workload_is_a_whole_profile_where_algoperf_divides_by_eight():
    times = {"sgd": {"cifar10": 40.0}, "sam": {"cifar10": 100.0}, "gam": {"cifar10": INF}}
    profiles = performance_profiles(times)
    assert profiles.ratios == {"sgd": {"cifar10": 1.0}, "sam": {"cifar10": 2.5}, "gam": {"cifar10": INF}}
    assert (profiles.rho["sgd"] == 1.0).all() and (profiles.rho["gam"] == 0.0).all()
    reached = profiles.taus >= 2.5
    assert (profiles.rho["sam"][~reached] == 0.0).all() and (profiles.rho["sam"][reached] == 1.0).all()
    assert_matches_algoperf(times, profiles)


@pytest.mark.parametrize("max_tau, num_points", [(4.0, 7), (3.0, 50), (2.0, 2)])
def test_a_given_grid_with_the_cut_at_four(max_tau, num_points):
    times = table(sgd=[2.0, 3.0, 7.0, 1.0, 1.0, 12.0, 5.0, 9.0],
                  sam=[3.0, 3.0, 8.0, 3.9, INF, 3.0, 5.5, 36.0],
                  gam=[6.0, 9.0, 7.5, 1.2, 2.0, 30.0, 19.0, 10.0])
    profiles = performance_profiles(times, taus=np.linspace(1.0, max_tau, num_points), r_max=4.0)
    assert_matches_algoperf(times, profiles, max_tau, num_points)


def test_the_speedup_is_the_inverse_of_what_compute_speedups_prints():
    times = table(sgd=[2.0, 3.0, INF, 1.0, INF, 12.0, 5.0, 9.0],
                  sam=[3.0, 1.5, 8.0, INF, INF, 3.0, 5.5, 36.0])
    budgets = {workload: 10.0 * (index + 1) for index, workload in enumerate(EIGHT)}
    speedup = geometric_mean_speedup(times, "sam", "sgd", budgets)
    assert speedup == pytest.approx(1 / algoperf_speedup(times, "sgd", "sam", budgets), rel=1e-12)
    charged = {"sgd": [2.0, 3.0, 31.0, 1.0, 51.0, 12.0, 5.0, 9.0], "sam": [3.0, 1.5, 8.0, 41.0, 51.0, 3.0, 5.5, 36.0]}
    by_hand = math.prod(base / other for base, other in zip(charged["sgd"], charged["sam"])) ** (1 / 8)
    assert speedup == pytest.approx(by_hand, rel=1e-12)
    assert geometric_mean_speedup(times, "sgd", "sgd", budgets) == 1.0
    assert geometric_mean_speedup({"a": {"w": 1.0}, "b": {"w": 2.0}}, "a", "b", {"w": 5}) == pytest.approx(2.0)


@pytest.mark.parametrize("times, keywords, message", [
    ({}, {}, "there are no methods to compare"),
    ({"sgd": {}}, {}, "the methods have no workloads to compare"),
    ({"sgd": {"w0": 1.0, "w1": 2.0}, "sam": {"w0": 1.0}}, {}, "method 'sam' has no time for workload 'w1'"),
    ({"sgd": {"w0": math.nan}}, {}, "method 'sgd' has time nan on workload 'w0', where a time is inf or a number > 0"),
    ({"sgd": {"w0": 0.0}}, {}, "method 'sgd' has time 0.0 on workload 'w0'"),
    ({"sgd": {"w0": -1.0}}, {}, "has time -1.0"),
    ({"sgd": {"w0": 1.0}}, {"r_max": 1.0}, r"r_max is 1.0, where it must be a finite number > 1"),
    ({"sgd": {"w0": 1.0}}, {"r_max": math.inf}, "r_max is inf"),
    ({"sgd": {"w0": 1.0}}, {"taus": [2.0, 2.0]}, "taus must hold at least two distinct values"),
    ({"sgd": {"w0": 1.0}}, {"taus": 1.5}, "taus must hold at least two distinct values"),
    ({"sgd": {"w0": 1.0}}, {"taus": [3.0, 1.0]}, "taus must be a one-dimensional grid of finite numbers in increasing"),
    ({"sgd": {"w0": 1.0}}, {"taus": [1.0, math.nan]}, "taus must be a one-dimensional grid"),
])
def test_refused_profiles(times, keywords, message):
    with pytest.raises(ValueError, match=message):
        performance_profiles(times, **keywords)


@pytest.mark.parametrize("method, baseline, budgets, message", [
    ("adam", "sgd", {"w0": 5.0, "w1": 5.0}, r"'adam' is none of the methods compared \('sgd', 'sam'\)"),
    ("sam", "adam", {"w0": 5.0, "w1": 5.0}, "'adam' is none of the methods compared"),
    ("sam", "sgd", {"w0": 5.0}, "workload 'w1' has no budget"),
    ("sam", "sgd", {"w0": 5.0, "w1": math.inf}, "workload 'w1' has budget inf, where it must be a finite number >= 0"),
])
def test_refused_speedups(method, baseline, budgets, message):
    times = {"sgd": {"w0": 1.0, "w1": INF}, "sam": {"w0": 2.0, "w1": 3.0}}
    with pytest.raises(ValueError, match=message):
        geometric_mean_speedup(times, method, baseline, budgets)


def test_a_speedup_needs_the_whole_table():
    times = {"sgd": {"w0": 1.0}, "sam": {"w0": 2.0}, "gam": {"w0": 1.0, "w1": 1.0}}
    with pytest.raises(ValueError, match="method 'sgd' has no time for workload 'w1'"):
        geometric_mean_speedup(times, "sam", "sgd", {"w0": 5.0, "w1": 5.0})
