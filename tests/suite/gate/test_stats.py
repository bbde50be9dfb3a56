"""The Mann-Whitney test against values that can be checked by hand or by counting."""

import itertools
import random

import pytest

from sparsebench.gate.stats import EXACT_MAX, mann_whitney_greater


@pytest.mark.parametrize("n1,n2,p", [(2, 2, 1 / 6), (3, 3, 1 / 20), (5, 5, 1 / 252), (8, 8, 1 / 12870)])
def test_fully_separated_samples_give_one_over_n_choose_k(n1, n2, p):
    slow = [10.0 + i for i in range(n1)]
    fast = [1.0 + i / 10 for i in range(n2)]
    assert mann_whitney_greater(slow, fast) == pytest.approx(p)
    assert mann_whitney_greater(fast, slow) == pytest.approx(1.0)


def test_exact_p_matches_counting_every_arrangement():
    cand, base = [3.0, 5.0, 6.0, 9.0], [1.0, 2.0, 4.0, 7.0, 8.0]
    pooled = cand + base
    u_obs = sum(c > b for c in cand for b in base)
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), len(cand)):
        c = [pooled[i] for i in idx]
        b = [pooled[i] for i in range(len(pooled)) if i not in idx]
        total += 1
        hits += sum(x > y for x in c for y in b) >= u_obs
    assert mann_whitney_greater(cand, base) == pytest.approx(hits / total)


def test_normal_approximation_agrees_with_exact_for_larger_samples():
    rng = random.Random(0)
    base = [rng.gauss(10, 1) for _ in range(40)]
    cand = [rng.gauss(10.5, 1) for _ in range(40)]
    exact = mann_whitney_greater(cand, base)
    assert 40 * 40 <= EXACT_MAX
    import sparsebench.gate.stats as stats

    old, stats.EXACT_MAX = stats.EXACT_MAX, 0
    try:
        approx = mann_whitney_greater(cand, base)
    finally:
        stats.EXACT_MAX = old
    assert approx == pytest.approx(exact, rel=0.1)


def test_ties_and_identical_samples_are_not_significant():
    same = [5.0] * 10
    assert mann_whitney_greater(same, same) >= 0.5
    assert mann_whitney_greater([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 2.0, 3.0]) > 0.3
    assert mann_whitney_greater([], [1.0]) == 1.0
