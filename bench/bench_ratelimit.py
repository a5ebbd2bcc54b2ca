"""Rate-limit checks per algorithm, allowed and denied, beside the seed's INCR-then-EXPIRE.

* ``ratelimit-allowed`` — a limit far above what the row can spend
  (1 000 000 / 60 s), so every check admits and writes.
* ``ratelimit-denied`` — 10 / hour, spent before timing, so every check denies.
* ``ratelimit-leased`` — a check through :class:`~cachelab.patterns.ratelimit_lease.QuotaLeases`
  (the app's fast reads): 1/50 of the limit leased at once, so one round trip
  (the check and its refill) per 100 checks of ``ALLOW``.
* ``ratelimit-local`` — the in-process GCRA the ``"local"`` failure policy
  falls back to (no Redis: zero round trips, CPU only).

Every limiter is one ``EVALSHA`` (its Lua reads ``TIME``; ``commands`` shows
what it runs). A denial by the fixed window, the sliding log or the
sliding-window counter only reads. ``naive_fixed_window`` is the seed: in steady state one ``INCR``
(its ``EXPIRE`` only follows a count of 1), so it is cheaper per check; what it
gets wrong is atomicity (a crash between the two calls leaves a counter that
never expires) and the 2× burst at window edges, not speed.

``memory_per_key`` is the identifier's key after the cost pass: in the allowed
rows that is ~200 admissions (a sliding log keeps one member per admission),
in the denied rows a full quota of 10. For the fixed window and the
sliding-window counter it is the current window's counter (``<key>:@<window>``,
named at the row's start on the server's clock; a row that crosses a window
edge meanwhile reports none).
"""

from __future__ import annotations

from typing import Any

import pytest

from cachelab.client import ResilientRedis
from cachelab.patterns.keys import make_key
from cachelab.patterns.ratelimit import create_limiter, naive_fixed_window
from cachelab.patterns.ratelimit_lease import QuotaLeases
from cachelab.patterns.ratelimit_local import LocalGCRA

ALGORITHMS = ["fixed_window", "sliding_log", "sliding_window", "token_bucket", "gcra"]
CASES = ["naive_fixed_window", *ALGORITHMS]
IDENTIFIER = "203.0.113.7"
ALLOW = (1_000_000, 60)
DENY = (10, 3600)
# A denial by these two replies with the µs left in the current clock-aligned window, a number
# that gains or loses a digit with the wall clock: their bytes out are measured, not exact. (An
# admission's reply is {now, remaining}: the client works the reset out from now.)
CLOCK_SIZED_DENIAL = {"fixed_window", "sliding_window"}


def _extra(case: str, limit: tuple[int, int]) -> dict[str, Any]:
    extra = {"algorithm": case, "variant": "naive" if case.startswith("naive") else "ours",
             "limit": f"{limit[0]}/{limit[1]}s"}  # fmt: skip
    if case in CLOCK_SIZED_DENIAL and limit == DENY:
        extra["bytes_vary"] = "the reply carries the µs left in a clock-aligned window"
    return extra


def _check(rr: ResilientRedis, case: str, limit: int, period: int, arun: Any) -> tuple[Any, str]:
    """An operation returning a truthy 'allowed', and the key holding the identifier's state."""
    if case == "naive_fixed_window":

        async def naive() -> bool:
            return await naive_fixed_window(rr.client, IDENTIFIER, limit, period)

        return naive, make_key("cl", IDENTIFIER, "rl", "naive")
    limiter = create_limiter(rr, case, limit, period)

    async def ours() -> bool:
        return (await limiter.check(IDENTIFIER)).allowed

    sec, usec = arun(rr.client.time())
    return ours, limiter.counter_key(IDENTIFIER, sec * 1_000_000 + usec)


@pytest.mark.parametrize("case", CASES)
def test_check_allowed(case: str, bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    op, key = _check(bench_rredis, case, *ALLOW, arun)
    assert arun(op())
    bench_async(
        op,
        group="ratelimit-allowed",
        memory_key=key,
        extra=_extra(case, ALLOW),
    )


@pytest.mark.parametrize("case", CASES)
def test_check_denied(case: str, bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    op, key = _check(bench_rredis, case, *DENY, arun)
    for _ in range(DENY[0]):
        assert arun(op())
    assert not arun(op())
    bench_async(
        op,
        group="ratelimit-denied",
        memory_key=key,
        extra=_extra(case, DENY),
    )


@pytest.mark.parametrize("case", ALGORITHMS)
def test_leased_check(case: str, bench_async: Any, bench_rredis: ResilientRedis, arun: Any):
    leases = QuotaLeases(create_limiter(bench_rredis, case, *ALLOW))
    assert arun(leases.check(IDENTIFIER)).allowed and leases.held(IDENTIFIER) == leases.units

    async def op() -> bool:
        return (await leases.check(IDENTIFIER)).allowed

    bench_async(op, group="ratelimit-leased", extra={**_extra(case, ALLOW), "lease_units": leases.units})


@pytest.mark.parametrize("path", ["allowed", "denied"])
def test_local_gcra_fallback(path: str, bench_sync: Any):
    """What a check costs while Redis is down under ``failure_policy="local"``."""
    limit, period = ALLOW if path == "allowed" else DENY
    gcra = LocalGCRA(limit, period)
    if path == "denied":
        for _ in range(limit):
            gcra.check(IDENTIFIER)
    assert gcra.check(IDENTIFIER).allowed is (path == "allowed")
    bench_sync(
        lambda: gcra.check(IDENTIFIER),
        group="ratelimit-local",
        extra={"algorithm": "local_gcra", "path": path, "limit": f"{limit}/{period}s"},
    )
