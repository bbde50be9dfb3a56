"""One-sided Mann-Whitney U test, written out so the gate needs no scipy.

Latency samples are skewed and have outliers (a context switch, a GC pause), so the gate
asks a rank question, "are candidate samples stochastically larger?", not a t-test one.
Small samples without ties get the exact distribution of U; otherwise the normal
approximation with tie correction and continuity correction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

EXACT_MAX = 2500  # n1 * n2 up to which the exact distribution is enumerated


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Mid-ranks (1-based) and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


@lru_cache(maxsize=256)
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    """Number of orderings giving each U = 0..n1*n2 (no ties): f(m, n) = f(m-1, n) >> n + f(m, n-1)."""
    if n1 == 0 or n2 == 0:
        return (1,)
    a = _u_counts(n1 - 1, n2)
    b = _u_counts(n1, n2 - 1)
    out = [0] * (n1 * n2 + 1)
    for u, c in enumerate(a):
        out[u + n2] += c
    for u, c in enumerate(b):
        out[u] += c
    return tuple(out)


def mann_whitney_greater(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """p-value of H1: candidate values tend to be larger than baseline values."""
    n1, n2 = len(candidate), len(baseline)
    if n1 == 0 or n2 == 0:
        return 1.0
    ranks, ties = _ranks([*candidate, *baseline])
    u = sum(ranks[:n1]) - n1 * (n1 + 1) / 2  # times a candidate sample beats a baseline one
    if not ties and n1 * n2 <= EXACT_MAX:
        counts = _u_counts(n1, n2)
        return sum(counts[math.ceil(u):]) / sum(counts)
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - sum(t ** 3 - t for t in ties) / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))

