"""Stampede protection: single-flight, a cross-process token lock, XFetch.

The seed's caches have none: when a hot key expires, every concurrent request
misses and runs the same expensive query (a "cache stampede" or "dog-pile").
Three defences, combinable:

* :class:`SingleFlight` — in one process, concurrent misses on one key share a
  single loader call. No round trips.
* :class:`TokenLock` — across processes, ``SET lock token NX PX lease``
  elects one loader per lease; the others wait for its value. Release is a Lua
  compare-and-delete, so a holder whose lease already expired can never delete
  the next holder's lock. One round trip to acquire, one to release.
* :func:`xfetch_should_refresh` — probabilistic early expiration (Vattani,
  Chierichetti, Lowenstein, "Optimal Probabilistic Cache Stampede Prevention",
  VLDB 2015): each reader refreshes early with a probability that rises as
  expiry nears and with how long the value took to compute, so one reader
  usually refreshes before the key ever expires. No extra round trips: the
  expiry and compute time travel inside the entry.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from cachelab.client import ResilientRedis

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Coalesce concurrent calls for the same key into one.

    The shared call runs in its own task, so cancelling the caller that
    started it does not cancel it for everybody else.
    """

    def __init__(self, remember: int = 4096) -> None:
        self._inflight: dict[str, asyncio.Task[T]] = {}
        #: Flights ended so far; :meth:`ended_since` compares against a caller's earlier reading.
        self.ended = 0
        self._last_end: OrderedDict[str, int] = OrderedDict()  # key -> ``ended`` when its last flight ended
        self._remember = remember

    def __len__(self) -> int:
        return len(self._inflight)

    def in_flight(self, key: str) -> bool:
        return key in self._inflight

    def ended_since(self, key: str, mark: int) -> bool:
        """Has a flight for ``key`` ended since :attr:`ended` read ``mark``?

        Why: a caller whose cache read left before another caller's fill landed, and whose
        miss came back after that caller's flight ended, would start a second flight and load
        again. Reading :attr:`ended` before its read lets it see that and read again instead.
        Remembered for the last ``remember`` keys (an older one answers False: a load, as before).
        """
        last = self._last_end.get(key)
        return last is not None and last > mark

    async def do(self, key: str, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return ``(result, shared)``; ``shared`` is True when another caller's call was joined."""
        task = self._inflight.get(key)
        shared = task is not None
        if task is None:
            task = asyncio.ensure_future(fn())
            self._inflight[key] = task
            task.add_done_callback(lambda _t, key=key: self._end(key))
        return await asyncio.shield(task), shared

    def _end(self, key: str) -> None:
        self._inflight.pop(key, None)
        self.ended += 1
        self._last_end[key] = self.ended
        self._last_end.move_to_end(key)
        if len(self._last_end) > self._remember:
            self._last_end.popitem(last=False)


class TokenLock:
    """A lease lock in Redis, owned by a random token."""

    def __init__(self, rr: ResilientRedis, key: str, lease: float) -> None:
        self.rr = rr
        self.key = key
        self.lease_ms = max(1, int(lease * 1000))
        self.token = secrets.token_hex(16)

    async def acquire(self) -> bool:
        """One attempt: True if we now hold the lock (one round trip)."""
        return bool(await self.rr.call(self.rr.client.set, self.key, self.token, nx=True, px=self.lease_ms))

    async def release(self) -> bool:
        """Delete the lock only if it is still ours (Lua compare-and-delete, one round trip)."""
        return bool(await self.rr.run_script("lock_release", [self.key], [self.token]))

    async def __aenter__(self) -> bool:
        return await self.acquire()

    async def __aexit__(self, *exc: Any) -> None:
        await self.release()


def xfetch_should_refresh(
    now_ms: float,
    expires_ms: float,
    compute_ms: float,
    beta: float,
    rand: Callable[[], float] = random.random,
) -> bool:
    """XFetch: refresh early when ``now - compute * beta * ln(U) >= expiry``, U ~ (0, 1].

    ``beta`` > 1 favours earlier refreshes, < 1 later ones; 1 is the paper's
    optimum. A value that took longer to compute is refreshed earlier.
    """
    if beta <= 0:
        return False
    u = rand() or 1e-12
    return now_ms - max(compute_ms, 1.0) * beta * math.log(u) >= expires_ms
