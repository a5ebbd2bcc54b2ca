"""What an LRU cache should hit under Zipf popularity: Che's approximation, and an exact LRU to check it.

A measured miss-ratio curve means little until it is compared with what the
cache *should* do. For independent requests with fixed popularities (the
"independent reference model", which is what our Zipf workloads are), an LRU
cache holding objects of sizes ``s_i`` that are requested with probabilities
``p_i`` behaves, to a very good approximation (Che, Tung and Wang, 2002;
Fricker, Robert and Roberts, 2012), as if every object stayed cached for a
fixed *characteristic time* ``T_C`` after its last request. ``T_C`` is the
time in which the distinct objects requested just fill the cache::

    sum_i s_i * (1 - exp(-p_i * T_C)) = capacity
    hit ratio = sum_i p_i * (1 - exp(-p_i * T_C))

Time here is counted in **requests** (object ``i`` arrives at rate ``p_i`` per
request), so ``T_C`` says how many requests a cache needs to forget where it
started: an exact LRU's contents are the most recently requested objects that
fit, so once the objects it holds have all been requested since some moment,
nothing from before that moment is left — which takes about one ``T_C``.
Measure after a few of them, never sooner (design notes, §4).

:func:`simulate_lru` is an exact LRU (an ordered dict, evicting the least
recently used until the new object fits), used in tests to check the model on
synthetic cases and to show what a short run from the wrong starting state
reads. :func:`top_hit_ratio` is the static optimum for equal sizes — the most
popular objects that fit, which is what a perfect LFU converges to.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import brentq


def zipf_popularity(n: int, s: float) -> np.ndarray:
    """Request probabilities of ranks ``0..n-1``: ``p_k ∝ 1/(k+1)^s`` (the law :class:`ZipfSampler` draws)."""
    if n < 1:
        raise ValueError("need at least one object")
    if s < 0:
        raise ValueError("the Zipf exponent must be >= 0")
    weights = 1.0 / np.arange(1, n + 1, dtype=float) ** s
    return weights / weights.sum()


def _arrays(
    popularity: Sequence[float] | np.ndarray, sizes: Sequence[float] | np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(popularity, dtype=float)
    if p.ndim != 1 or not len(p) or np.any(p < 0) or not math.isclose(float(p.sum()), 1.0, rel_tol=1e-6):
        raise ValueError("popularity must be a non-empty vector of probabilities summing to 1")
    sz = np.ones_like(p) if sizes is None else np.asarray(sizes, dtype=float)
    if sz.shape != p.shape or np.any(sz <= 0):
        raise ValueError("sizes must be positive, one per object")
    return p, sz


@dataclass(frozen=True)
class CheEstimate:
    """Che's approximation for one cache size.

    ``characteristic_time`` is in requests (``inf`` when everything fits);
    ``hit_ratio`` is per request, ``byte_hit_ratio`` per byte requested;
    ``objects`` the expected number of objects cached.
    """

    capacity: float
    characteristic_time: float
    hit_ratio: float
    byte_hit_ratio: float
    objects: float

    def characteristic_seconds(self, requests_per_second: float) -> float:
        """``T_C`` in seconds at a given request rate (what a time-based eviction clock sees)."""
        return self.characteristic_time / requests_per_second


def che_lru(
    popularity: Sequence[float] | np.ndarray,
    capacity: float,
    sizes: Sequence[float] | np.ndarray | None = None,
) -> CheEstimate:
    """Che's approximation of an LRU cache of ``capacity`` (same unit as ``sizes``; objects if None).

    ``T_C`` is the root of ``sum s_i (1 - e^{-p_i T}) - capacity``, which
    rises from ``-capacity`` at ``T = 0`` towards ``sum s_i - capacity``: one
    root, bracketed by doubling and found by :func:`scipy.optimize.brentq`.
    """
    p, sz = _arrays(popularity, sizes)
    total = float(sz.sum())
    if capacity <= 0:
        return CheEstimate(float(capacity), 0.0, 0.0, 0.0, 0.0)
    if capacity >= total:
        return CheEstimate(float(capacity), math.inf, 1.0, 1.0, float(len(p)))

    def filled(t: float) -> float:
        return float(np.dot(sz, -np.expm1(-p * t))) - capacity

    high = 1.0
    while filled(high) < 0:
        high *= 2.0
    t_c = brentq(filled, 0.0, high, xtol=1e-9, rtol=1e-12)
    held = -np.expm1(-p * t_c)  # probability that each object is cached
    return CheEstimate(
        capacity=float(capacity),
        characteristic_time=float(t_c),
        hit_ratio=float(np.dot(p, held)),
        byte_hit_ratio=float(np.dot(p * sz, held) / np.dot(p, sz)),
        objects=float(held.sum()),
    )


def top_hit_ratio(popularity: Sequence[float] | np.ndarray, objects: float) -> float:
    """Hit ratio of a cache that holds the ``objects`` most popular objects (a perfect LFU, equal sizes).

    Under independent requests no online policy does better with equal sizes;
    a fractional count takes that share of the next object.
    """
    p = np.sort(np.asarray(popularity, dtype=float))[::-1]
    whole = int(min(max(objects, 0), len(p)))
    partial = (objects - whole) * p[whole] if whole < len(p) else 0.0
    return float(p[:whole].sum() + partial)


class ExactLRU:
    """A byte-budgeted LRU cache of object ids: the least recently used go first until a new one fits."""

    def __init__(
        self, capacity: float, sizes: Sequence[float] | None = None, start: Iterable[int] = ()
    ) -> None:
        """``start``: objects already cached, least recently used first (they must fit)."""
        self.capacity = capacity
        self.sizes = sizes
        self._order: OrderedDict[int, None] = OrderedDict()
        self.used = 0.0
        for obj in start:
            self._order[obj] = None
            self.used += self._size(obj)
        if self.used > capacity:
            raise ValueError("the starting contents do not fit")

    def _size(self, obj: int) -> float:
        return 1.0 if self.sizes is None else float(self.sizes[obj])

    def request(self, obj: int) -> bool:
        """Serve one request; True for a hit. An object larger than the cache is never stored."""
        if obj in self._order:
            self._order.move_to_end(obj)
            return True
        size = self._size(obj)
        if size <= self.capacity:
            while self.used + size > self.capacity:
                evicted, _ = self._order.popitem(last=False)
                self.used -= self._size(evicted)
            self._order[obj] = None
            self.used += size
        return False

    def contents(self) -> list[int]:
        """Cached objects, least recently used first."""
        return list(self._order)


@dataclass
class LRURun:
    """Hits of an exact-LRU run after its warm-up, and the cache it ended with."""

    hits: int
    requests: int
    contents: list[int] = field(default_factory=list)

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else math.nan


def zipf_requests(popularity: Sequence[float] | np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` independent draws of object ids with the given probabilities (seeded)."""
    p, _ = _arrays(popularity, None)
    return np.random.default_rng(seed).choice(len(p), size=count, p=p)


def simulate_lru(
    popularity: Sequence[float] | np.ndarray,
    capacity: float,
    *,
    requests: int,
    warmup: int,
    sizes: Sequence[float] | None = None,
    start: Iterable[int] = (),
    seed: int = 0,
) -> LRURun:
    """Run an exact LRU on ``warmup + requests`` independent requests; count hits after the warm-up."""
    cache = ExactLRU(capacity, sizes, start)
    hits = 0
    for n, obj in enumerate(zipf_requests(popularity, warmup + requests, seed).tolist()):
        hit = cache.request(obj)
        if n >= warmup:
            hits += hit
    return LRURun(hits, requests, cache.contents())
