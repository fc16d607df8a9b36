"""AlgoPerf's scrambled Halton draws (``flatmin.tuning.halton``): the same values as AlgoPerf's
``halton.generate_search`` after ``numpy.random.seed(seed)`` (restated below as its code does it), cut
into studies; seeded; numpy's global generator untouched; bad input refused in one sentence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flatmin.errors import ConfigError
from flatmin.tuning import draw_trials
from flatmin.tuning.halton import MAX_DIMENSIONS, ODD_PRIMES


# -- AlgoPerf's algoperf/halton.py (mlcommons/algorithmic-efficiency @ 2c90454f), restated ------------
def sundaram_primes(below: int) -> list[int]:
    """The odd primes below ``below``, by the sieve of Sundaram (halton.py 22-31)."""
    half = (below - 2) // 2
    crossed = [False] * (half + 1)
    for i in range(1, half + 1):
        j = i
        while i + j + 2 * i * j <= half:
            crossed[i + j + 2 * i * j] = True
            j += 1
    return [2 * k + 1 for k in range(1, half + 1) if not crossed[k]]


def algoperf_dimension(count: int, base: int, shift: bool) -> list[float]:
    """halton.py 39-91: points 1 … count, digits permuted by RandomState(base), then its shift."""
    rng = np.random.RandomState(base)
    permuted = list(range(1, base))
    rng.shuffle(permuted)
    permuted = [0] + permuted
    offset = rng.random_sample() if shift else None
    points = []
    for i in range(1, count + 1):
        number, denominator = 0.0, base
        while i:
            number += permuted[i % base] / denominator
            denominator *= base
            i //= base
        points.append(math.fmod(number + offset, 1.0) if shift else number)
    return points


def algoperf_sequence(count: int, dims: int, skip: int, shift: bool) -> list[tuple[float, ...]]:
    """halton.py 172-205: the bases, the skip, the transpose and numpy's *global* shuffle."""
    primes, attempts = [], 1
    while len(primes) < dims + 1:
        primes = sundaram_primes(1000 * attempts)
        attempts += 1
    primes = primes[-dims - 1:-1]
    columns = [algoperf_dimension(count + skip, base, shift)[skip:] for base in primes]
    sequence = list(zip(*columns))
    np.random.shuffle(sequence)
    return sequence


def algoperf_value(form: dict, x: float):
    """halton.py 208-233 (dispatched as generate_search does, 370-377)."""
    if "feasible_points" in form:
        return form["feasible_points"][int(math.floor(x * len(form["feasible_points"])))]
    if form["scaling"] == "log":
        return form["min"] * math.exp(x * math.log(form["max"] / form["min"]))
    return x * (form["max"] - form["min"]) + form["min"]


def algoperf_search(space: dict, count: int, seed: int, skip: int = 100, shift: bool = True) -> list[dict]:
    """``numpy.random.seed(seed)`` then ``generate_search(space, count)`` (halton.py 337-382), as
    dicts; numpy's global state is put back afterwards."""
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        sequence = algoperf_sequence(count, len(space), skip, shift)
    finally:
        np.random.set_state(saved)
    return [{key: algoperf_value(form, x) for (key, form), x in zip(space.items(), point)} for point in sequence]


# -- the spaces -----------------------------------------------------------------------------------
LR = {"min": 1e-4, "max": 1.0, "scaling": "log"}
MOMENTUM = {"min": 0.8, "max": 0.99, "scaling": "linear"}
BATCH = {"feasible_points": [32, 64, 128, 256]}
SPACES = [
    {"optimizer.lr": LR},
    {"optimizer.lr": LR, "dataset.batch_size": BATCH},
    {"optimizer.rho": {"feasible_points": ["a", "b", "c"]}, "optimizer.momentum": MOMENTUM,
     "optimizer.lr": LR},
]


def flat(studies: list[list[dict]]) -> list[dict]:
    return [point for study in studies for point in study]


@pytest.mark.parametrize("space", SPACES, ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("seed", [0, 1, 42])
@pytest.mark.parametrize("studies", [1, 3])
@pytest.mark.parametrize("trials", [1, 5])
def test_the_draws_are_algoperfs_after_seeding_numpy_cut_into_studies(space, seed, studies, trials):
    """Exactly equal (the same float operations in the same order), keys in the space's order."""
    drawn = draw_trials(space, trials, studies, seed)
    assert [len(study) for study in drawn] == [trials] * studies
    assert all(list(point) == list(space) for point in flat(drawn))
    assert flat(drawn) == algoperf_search(space, studies * trials, seed)


def test_the_skip_and_the_shift_matter():
    drawn = flat(draw_trials(SPACES[2], 5, 3, seed=7))
    assert drawn == algoperf_search(SPACES[2], 15, 7)
    assert drawn != algoperf_search(SPACES[2], 15, 7, skip=0)
    assert drawn != algoperf_search(SPACES[2], 15, 7, shift=False)


def test_study_j_takes_points_j_n_to_j_n_plus_n_minus_1_of_one_shuffled_list():
    one_list = draw_trials(SPACES[1], 12, 1, seed=3)[0]
    studies = draw_trials(SPACES[1], 4, 3, seed=3)
    assert studies == [one_list[0:4], one_list[4:8], one_list[8:12]]
    assert len({tuple(point.values()) for point in one_list}) == 12


def test_a_seed_reproduces_its_draws_and_another_seed_differs():
    assert draw_trials(SPACES[2], 5, 3, seed=11) == draw_trials(SPACES[2], 5, 3, seed=11)
    assert draw_trials(SPACES[2], 5, 3, seed=11) != draw_trials(SPACES[2], 5, 3, seed=12)


def test_numpys_global_generator_is_neither_read_nor_changed():
    before = np.random.get_state()
    try:
        first = draw_trials(SPACES[2], 5, 3, seed=0)
        after = np.random.get_state()
        assert before[0] == after[0] and all(np.array_equal(b, a) for b, a in zip(before[1:], after[1:]))
        global_draw_after_the_call = np.random.random_sample(3)
        np.random.set_state(before)
        assert np.array_equal(global_draw_after_the_call, np.random.random_sample(3))
        np.random.seed(123)
        assert draw_trials(SPACES[2], 5, 3, seed=0) == first
    finally:
        np.random.set_state(before)


def test_values_lie_in_their_ranges():
    for point in draw_trials(SPACES[2], 20, 2, seed=9)[1]:
        assert point["optimizer.rho"] in ("a", "b", "c")
        assert MOMENTUM["min"] <= point["optimizer.momentum"] < MOMENTUM["max"]
        assert LR["min"] <= point["optimizer.lr"] < LR["max"]


def test_the_bases_are_algoperfs_and_the_most_dimensions_draw():
    assert list(ODD_PRIMES) == sundaram_primes(1000)
    assert MAX_DIMENSIONS == 166
    widest = {f"k{i}": MOMENTUM for i in range(MAX_DIMENSIONS)}
    assert flat(draw_trials(widest, 2, seed=4)) == algoperf_search(widest, 2, 4)


@pytest.mark.parametrize(("space", "message"), [
    ({}, r"^the search space must map at least one key to a range, got \{\}\.$"),
    ([("optimizer.lr", LR)], r"^the search space must map at least one key to a range"),
    ({f"k{i}": LR for i in range(MAX_DIMENSIONS + 1)},
     r"^the search space has 167 keys, more than the 166 dimensions the Halton draws have bases for\.$"),
    ({"optimizer.lr": {"min": 1.0, "max": 1e-4, "scaling": "log"}},
     r"^the search range of optimizer\.lr must be min < max, got"),
    ({"optimizer.lr": {"min": 0.1, "max": 0.1, "scaling": "linear"}},
     r"^the search range of optimizer\.lr must be min < max"),
    ({"optimizer.lr": {"min": 0.0, "max": 1.0, "scaling": "log"}},
     r"^the search range of optimizer\.lr must be min > 0 on a log scale"),
    ({"optimizer.lr": {"min": 0.1, "max": 1.0, "scaling": "cubic"}},
     r"^the search range of optimizer\.lr must be scaling log or linear"),
    ({"optimizer.lr": {"feasible_points": []}},
     r"^the search range of optimizer\.lr must be a non-empty list of feasible_points"),
    ({"optimizer.lr": {"feasible_points": "abc"}}, r"must be a non-empty list of feasible_points"),
    ({"optimizer.lr": {"min": 0.1, "max": 1.0}},
     r"^the search range of optimizer\.lr must be \{min, max, scaling\} or \{feasible_points"),
    ({"optimizer.lr": {"min": 0.1, "max": 1.0, "scaling": "log", "feasible_points": [1]}},
     r"must be \{min, max, scaling\}"),
    ({"optimizer.lr": {"around": 10}}, r"must be \{min, max, scaling\} or \{feasible_points: \[\.\.\.\]\}, got"),
    ({"optimizer.lr": 0.1}, r"^the search range of optimizer\.lr must be \{min, max, scaling\}"),
    ({"optimizer.lr": {"min": "0.1", "max": 1.0, "scaling": "log"}}, r"must be a finite number min and max"),
    ({"optimizer.lr": {"min": 0.1, "max": math.inf, "scaling": "log"}}, r"must be a finite number min and max"),
])
def test_a_bad_space_is_one_sentence_naming_the_key(space, message):
    with pytest.raises(ConfigError, match=message):
        draw_trials(space, 5)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"trials": 0}, r"^trials \(tuning\.trials\) must be an integer ≥ 1, got 0\.$"),
    ({"trials": 2.0}, r"^trials \(tuning\.trials\) must be an integer ≥ 1, got 2\.0\.$"),
    ({"trials": True}, r"^trials \(tuning\.trials\) must be an integer ≥ 1, got True\.$"),
    ({"studies": 0}, r"^studies \(tuning\.studies\) must be an integer ≥ 1, got 0\.$"),
    ({"studies": "3"}, r"^studies \(tuning\.studies\) must be an integer ≥ 1, got '3'\.$"),
    ({"seed": -1}, r"^the draws' seed \(tuning\.seed\) must be an integer in \[0, 2\*\*32\), got -1\.$"),
    ({"seed": 2**32}, r"^the draws' seed \(tuning\.seed\) must be an integer in \[0, 2\*\*32\)"),
    ({"seed": 1.5}, r"^the draws' seed \(tuning\.seed\) must be an integer in \[0, 2\*\*32\)"),
])
def test_bad_counts_and_seeds_are_one_sentence(arguments, message):
    with pytest.raises(ConfigError, match=message):
        draw_trials(SPACES[0], **{"trials": 5, **arguments})
