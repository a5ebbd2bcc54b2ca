"""A seeded Zipf sampler over ranks ``0..n-1``.

Real dashboards are skewed: a few tenants, the first pages and the newest
initiatives get most of the reads. A uniform workload under-states what a
cache does (too cold) and a single hot key over-states it; Zipf with an
exponent ``s`` near 1 sits between and is what cache studies use. Draws go by
inverse CDF (a precomputed table and a binary search, O(log n)), and a
sampler built with the same seed draws the same sequence, so two runs (cache
off, cache on) see the same requests in the same order.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")
_TABLES: dict[tuple[int, float], list[float]] = {}


def _cdf(n: int, s: float) -> list[float]:
    table = _TABLES.get((n, s))
    if table is None:
        weights = [1.0 / (k + 1) ** s for k in range(n)]
        total = sum(weights)
        table = list(itertools.accumulate(w / total for w in weights))
        table[-1] = 1.0  # rounding must not leave a gap at the top
        if len(_TABLES) < 4096:
            _TABLES[(n, s)] = table
    return table


class ZipfSampler:
    """Draws rank ``k`` (0-based) with probability proportional to ``1 / (k + 1) ** s``.

    ``n`` may also be given per draw (``sample(n)``), for sizes only known at
    run time such as the number of pages of a filtered list.
    """

    def __init__(self, n: int = 1, s: float = 1.1, seed: int | None = 0) -> None:
        if n < 1:
            raise ValueError("a Zipf sampler needs at least one rank")
        if s < 0:
            raise ValueError("the Zipf exponent must be >= 0 (0 is uniform)")
        self.n = n
        self.s = s
        self.rng = random.Random(seed)

    def probability(self, rank: int, n: int | None = None) -> float:
        """P(rank): what the frequency of ``rank`` converges to over many draws."""
        cdf = _cdf(n or self.n, self.s)
        return cdf[rank] - (cdf[rank - 1] if rank else 0.0)

    def sample(self, n: int | None = None) -> int:
        return bisect.bisect_left(_cdf(max(1, n or self.n), self.s), self.rng.random())

    def choice(self, items: Sequence[T]) -> T:
        """An item by Zipf rank over ``items`` (non-empty): ``items[0]`` is the most popular."""
        if not items:
            raise IndexError("cannot choose from an empty sequence")
        return items[self.sample(len(items))]
