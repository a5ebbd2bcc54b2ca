"""Rate limiting: five algorithms, one EVALSHA per check, an explicit failure policy.

The seed's version
------------------
``checkRateLimit(id, limit, window)`` does ``INCR rate:<id>``, then, if the count
is 1, ``EXPIRE rate:<id> window`` in a second call, and returns ``true`` when
there is no Redis client. Its flaws:

* two round trips, not atomic: a process that dies (or a connection that drops)
  between INCR and EXPIRE leaves a counter with no TTL, and that identifier is
  locked out forever once it reaches the limit;
* a fixed window: a client can spend the whole limit at the end of one window
  and again at the start of the next, 2× the limit within moments;
* it always fails open, silently: an outage switches rate limiting off;
* the raw identifier goes into the key (``x-forwarded-for`` is client-chosen).

The fix
-------
* Every check is one EVALSHA (``lua/ratelimit_<algorithm>.lua``) that reads the
  server's clock (``TIME``; all processes share one clock), decides, writes and
  sets the key's expiry in the same atomic step: no key is ever left without a
  TTL, and no client clock skew enters the decision.
* Five algorithms with different trade-offs (measured in ``tests/test_ratelimit.py``):

  ========================  ======================  ==============================================
  algorithm                 state per identifier    worst case
  ========================  ======================  ==============================================
  ``fixed_window``          a string per window     2 × limit within moments across a window edge
                            (its count)
  ``sliding_log``           zset, one member/unit   exact: ≤ limit in any interval of one period
  ``sliding_window``        a string per window     ≤ limit + limit·d/period in any interval d;
                            (its count; the current
                            and the previous one    approximates the log, may admit up to ~2×
                            are read)               limit over a full period if the previous
                                                    window's traffic was all at its end
  ``token_bucket``          hash (tokens, time)     ≤ burst + limit·d/period in any interval d
  ``gcra``                  one integer (TAT, µs)   as token bucket, in one string key
  ========================  ======================  ==============================================

  With ``burst=1`` the token bucket and GCRA become strict pacers: ≤ limit in
  any interval of one period, but no burst at all.
* GCRA (Redis and the local fallback alike) counts time in whole microseconds:
  ``period`` becomes integer µs once, at construction; the emission interval
  is ``period_us / limit`` rounded up to a µs (exact integer arithmetic, no
  new argument or round trip) and the TAT moves by whole intervals, so exactly
  ``burst`` units pass at once and then exactly one per interval, with no
  float tie at the boundary (see :mod:`~cachelab.patterns.ratelimit_local`).
* ``limit``, ``period`` and ``burst`` are checked once, at construction, by
  :func:`~cachelab.patterns.ratelimit_local.validate_rate`: NaN, infinities,
  values ≤ 0, non-integers and absurd sizes are a :class:`ValueError` naming
  the argument (``period=inf`` used to escape as ``OverflowError``).
* Each check may carry a ``cost`` (an expensive endpoint costs 5); a cost the
  limiter can never admit (more than ``limit``, or than ``burst``) is a
  :class:`ValueError`, not a silent eternal 429.
* Keys are ``make_key(prefix, identifier, "rl", algorithm[, name])``: the
  identifier is escaped (``*``, ``:``, ``{`` cannot collide or glob) and is the
  hash tag, so a Redis Cluster routes each check to one slot. The windowed
  algorithms keep each window's count in ``<key>:@<window index>`` (same hash
  tag, same slot; ``@`` is escaped in every component, so no other key can
  have that name): a new window is a new key, created with its expiry
  (``SET .. PX``) by its first admission, so a counter never lacks a TTL and
  an expiry that lags (PX is whole ms) cannot leak a count into the next
  window. (Until 2026-12 they kept ``{w, c[, p]}`` in a hash at ``<key>``; the
  scripts no longer touch such a hash, which expires on its own within a
  period or two: an identifier's in-flight window restarts once on upgrade.)
* The failure policy is explicit: ``"open"`` (admit), ``"closed"`` (deny) or
  ``"local"`` (an in-process GCRA with the same limit: N processes give up to
  N × limit; see :mod:`cachelab.patterns.ratelimit_local`). Checks go through
  the breaker, so during an outage the policy answers at once.

Cost per check
--------------
One round trip, one EVALSHA (0 when the policy answers). On the server:

========================  ====================================  ==========================
script                    admitted                              denied (reads only)
========================  ====================================  ==========================
``fixed_window``          TIME, GET, INCRBY (SET PX if new)     TIME, GET
``sliding_log``           TIME, ZCOUNT, ZREMRANGEBYSCORE,       TIME, ZCOUNT, ZRANGE ×1–2
                          ZADD per unit, PEXPIRE
``sliding_window``        TIME, MGET, INCRBY (SET PX if new)    TIME, MGET
========================  ====================================  ==========================

An admission replies ``{now_us, remaining}`` and the client works out
``reset_after`` from ``now_us`` (the window's end; one period for the log);
a denial replies ``{now_us, remaining, reset_after_us, retry_after_us}``. (The
token bucket and GCRA still reply ``{allowed, remaining, reset, retry, now}``.)
In process, a check is one :class:`~cachelab.patterns.keys.KeyBuilder` call
(a dict hit for an identifier seen recently, no regex), the cost=1 argument
list built at construction, the EVALSHA sent through the breaker without
redis-py's script wrapper, and a :class:`RateLimitResult` filled through its
slot setters.

Until 2026-12 every script also kept a hash (HMGET/HSET), denials wrote
(PEXPIRE, HSET), every reply had five values, and each check ran three regex
substitutions and a frozen dataclass's ``object.__setattr__`` per field. Beside
the ``limits`` package (async ``RedisStorage``, redis-py, each library on its
own default client; the pairs fixed window, sliding log ↔ moving window and
sliding-window counter; one hot identifier or 1 000, allowed and denied: 12
rows; 50 interleaved blocks of 200 checks on one server; median of the
per-block ratios), a check cost 1.02–1.12 × ``limits``' before and 0.89–0.97 ×
after (0.86–0.91 × the old version, measured alongside); ``cachelab peers
--only ratelimit`` (30 blocks) gives 0.99–1.09 before and 0.86–0.92 after,
every row's 95 % interval below 1. The server still runs
more per check than ``limits``' scripts do (TIME and a reply of 2–4 values: a
fixed-window admission is ~6–12 µs of Lua, pipelined, against ~2.5–5 µs for
``limits``' INCRBY/EXPIRE; a sliding-log denial 11–14 µs against 4–5 µs for
its one LINDEX); the client does less. (``limits`` reads the client's clock for its moving window, returns
only a bool, and counts denied hits of a fixed window into its counter.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import redis.asyncio
from redis.exceptions import NoScriptError

from cachelab.client import ResilientRedis, ScriptCall
from cachelab.patterns.keys import DEFAULT_PREFIX, KeyBuilder, make_key
from cachelab.patterns.ratelimit_local import LocalGCRA, validate_rate
from cachelab.resilience import RedisUnavailable

FailurePolicy = Literal["open", "closed", "local"]
FAILURE_POLICIES: tuple[str, ...] = ("open", "closed", "local")
SOURCES: tuple[str, ...] = ("redis", "fallback-open", "fallback-closed", "local", "lease")


# -- result and headers -------------------------------------------------------


@dataclass(frozen=True, slots=True, init=False)
class RateLimitResult:
    """One decision. Times are in seconds; ``retry_after`` is 0 when allowed.

    ``reset_after`` is the time until the identifier's quota is whole again.
    ``server_time_us`` is the Redis clock at the decision (None when Redis was
    not consulted), which is what experiments need to place decisions in time.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    source: str
    server_time_us: int | None = None

    def __init__(
        self,
        allowed: bool,
        limit: int,
        remaining: int,
        reset_after: float,
        retry_after: float,
        source: str,
        server_time_us: int | None = None,
    ) -> None:
        # Frozen as before (assignment raises FrozenInstanceError), but filled through the
        # slots' own setters: the generated frozen __init__ calls object.__setattr__ per
        # field, ~2.5× as dear, and was the largest piece of a check's own Python work.
        _set_allowed(self, allowed)
        _set_limit(self, limit)
        _set_remaining(self, remaining)
        _set_reset_after(self, reset_after)
        _set_retry_after(self, retry_after)
        _set_source(self, source)
        _set_server_time_us(self, server_time_us)

    def headers(self) -> dict[str, str]:
        return rate_limit_headers(self)


(
    _set_allowed, _set_limit, _set_remaining, _set_reset_after, _set_retry_after, _set_source,
    _set_server_time_us,
) = (getattr(RateLimitResult, f.name).__set__ for f in fields(RateLimitResult))


def rate_limit_headers(result: RateLimitResult) -> dict[str, str]:
    """``X-RateLimit-*`` headers (reset as delta seconds) and ``Retry-After`` on a denial."""
    headers = {
        "X-RateLimit-Limit": str(result.limit),
        "X-RateLimit-Remaining": str(max(0, result.remaining)),
        "X-RateLimit-Reset": str(math.ceil(result.reset_after)),
    }
    if not result.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(result.retry_after)))
    return headers


# -- limit strings ------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LIMIT_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*$")


def parse_limit(text: str) -> tuple[int, float]:
    """``"100/60s"`` → ``(100, 60.0)``; also ``"5/1m"``, ``"10/s"``, ``"1000/1h"``, ``"3/500ms"``."""
    match = _LIMIT_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"malformed rate limit {text!r}: expected '<count>/<number><unit>' with unit "
            f"ms, s, m, h or d, e.g. '100/60s' or '5/1m'"
        )
    count, number, unit = match.groups()
    limit = int(count)
    period = float(number or 1) * _UNITS[unit]
    try:
        validate_rate(limit, period)
    except ValueError as exc:
        raise ValueError(f"rate limit {text!r}: {exc}") from None
    return limit, period


# -- metrics ------------------------------------------------------------------


@dataclass
class RateLimitStats:
    """Decisions by outcome and by who made them (for a metrics endpoint)."""

    allowed: int = 0
    denied: int = 0
    by_source: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))

    def record(self, result: RateLimitResult) -> None:
        if result.allowed:
            self.allowed += 1
        else:
            self.denied += 1
        self.by_source[result.source] = self.by_source.get(result.source, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "denied": self.denied, "by_source": dict(self.by_source)}


# -- limiters -----------------------------------------------------------------


class RateLimiter:
    """A limit of ``limit`` units per ``period`` seconds per identifier, enforced in Redis.

    Subclasses name the algorithm and its Lua script; :meth:`check` is the
    whole API. Everything a check does not need to redo is done once, here:
    the key's prefix and parts are escaped once (:class:`~cachelab.patterns.keys.KeyBuilder`,
    which also remembers recent identifiers' escaped form), the script is
    registered once and its argument list for the default ``cost=1`` is
    built once. A check then builds one key, sends one EVALSHA through the
    breaker and turns the short reply into a :class:`RateLimitResult`.
    """

    algorithm: ClassVar[str] = ""

    def __init__(
        self,
        rr: ResilientRedis,
        limit: int,
        period: float,
        *,
        failure_policy: FailurePolicy = "open",
        prefix: str = DEFAULT_PREFIX,
        name: str | None = None,
        local_max_keys: int = 100_000,
    ) -> None:
        limit, period_us, _burst = validate_rate(limit, period)
        if failure_policy not in FAILURE_POLICIES:
            raise ValueError(f"failure_policy must be one of {FAILURE_POLICIES}, got {failure_policy!r}")
        self.rr = rr
        self.limit = limit
        self.period = float(period)
        self.period_us = period_us
        self.failure_policy = failure_policy
        self.prefix = prefix
        self.name = name
        self.script = f"ratelimit_{self.algorithm}"
        self.stats = RateLimitStats()
        self.local: LocalGCRA | None = None
        if failure_policy == "local":
            self.local = LocalGCRA(limit, self.period, burst=self.capacity, max_keys=local_max_keys)
        parts: tuple[object, ...] = ("rl", self.algorithm)
        if name is not None:
            parts = (*parts, name)
        self._key = KeyBuilder(prefix, *parts)
        self._script = rr.script(self.script)  # registered, not loaded: no round trip
        self._args1 = self._args(1)
        # rr.call is the breaker plus a cluster client's one-time initialisation: a single
        # server's client needs only the breaker (one coroutine frame less per check).
        self._call = rr.call if rr.is_cluster else rr.breaker.call

    @property
    def capacity(self) -> int:
        """The largest cost one check may have: what the limiter can admit at once."""
        return self.limit

    def key(self, identifier: object) -> str:
        """The identifier's key, ``make_key(prefix, identifier, "rl", algorithm[, name])``."""
        return self._key(identifier)

    def counter_key(self, identifier: object, server_time_us: int) -> str:
        """The key that holds ``identifier``'s state at server time ``server_time_us``.

        The identifier's :meth:`key`, except for the windowed algorithms, which
        keep one counter per window (see :class:`FixedWindowLimiter`).
        """
        return self.key(identifier)

    def state_keys(self, identifier: object, server_time_us: int) -> tuple[str, ...]:
        """Every key a check of ``identifier`` at ``server_time_us`` reads (to measure its memory)."""
        return (self.counter_key(identifier, server_time_us),)

    def _args(self, cost: int) -> list[int]:
        return [self.limit, self.period_us, cost]

    def _validate_cost(self, cost: int) -> None:
        if not isinstance(cost, int) or isinstance(cost, bool) or cost < 1:
            raise ValueError(f"cost must be an integer >= 1, got {cost!r}")
        if cost > self.capacity:
            raise ValueError(
                f"cost {cost} exceeds what this {self.algorithm} limiter can ever admit at once "
                f"({self.capacity}); raise the limit/burst or lower the cost"
            )

    async def check(self, identifier: object, cost: int = 1) -> RateLimitResult:
        """Spend ``cost`` units of ``identifier``'s quota if they are all available."""
        if cost == 1 and type(cost) is int:  # the default needs no validation (capacity >= 1)
            args = self._args1
        else:
            self._validate_cost(cost)
            args = self._args(cost)
        key = self._key(identifier)
        try:
            try:
                reply = await self._call(self.rr.client.execute_command, "EVALSHA", self._script.sha, 1,
                                         key, *args)  # fmt: skip
            except NoScriptError:  # a restarted or flushed server: the script object loads it
                reply = await self.rr.call(self._script, keys=[key], args=args)
        except RedisUnavailable:
            result = self._fallback(key, cost)
        else:
            result = self._result(reply)
        self.stats.record(result)
        return result

    # -- the same check, in parts, for a caller that batches it with other calls --------
    def check_call(self, identifier: object, cost: int = 1) -> ScriptCall:
        """The script call :meth:`check` sends, to batch with independent calls
        (:meth:`ResilientRedis.batch`); read its reply with :meth:`result_from_reply`."""
        if cost == 1 and type(cost) is int:
            args = list(self._args1)  # a copy: the caller owns the call it is handed
        else:
            self._validate_cost(cost)
            args = self._args(cost)
        return ScriptCall(self.script, [self._key(identifier)], args)

    def result_from_reply(self, reply: Any, *, record: bool = True) -> RateLimitResult:
        """The decision :meth:`check_call`'s reply carries (counted in :attr:`stats` if ``record``:
        a lease, :mod:`cachelab.patterns.ratelimit_lease`, is not a request's decision)."""
        result = self._result(reply)
        if record:
            self.stats.record(result)
        return result

    def unavailable_result(self, identifier: object, cost: int = 1) -> RateLimitResult:
        """The failure policy's decision, for a batched check that could not reach Redis."""
        result = self._fallback(self.key(identifier), cost)
        self.stats.record(result)
        return result

    def _result(self, reply: list[int]) -> RateLimitResult:
        """``{now, remaining}`` when allowed, ``{now, remaining, reset_us, retry_us}`` when denied."""
        if len(reply) == 2:
            now, remaining = reply
            return RateLimitResult(
                True, self.limit, remaining, self._reset_when_allowed(now) / 1_000_000, 0.0, "redis", now
            )
        now, remaining, reset_us, retry_us = reply
        return RateLimitResult(
            False, self.limit, remaining, reset_us / 1_000_000, retry_us / 1_000_000, "redis", now
        )

    def _reset_when_allowed(self, now_us: int) -> int:
        """µs until the quota is whole again after an admission at ``now_us`` (not sent by the script)."""
        return self.period_us

    def _fallback(self, key: str, cost: int) -> RateLimitResult:
        if self.local is not None:
            d = self.local.check(key, cost)
            return RateLimitResult(d.allowed, self.limit, d.remaining, d.reset_after, d.retry_after, "local")
        if self.failure_policy == "open":
            return RateLimitResult(True, self.limit, self.limit, 0.0, 0.0, "fallback-open")
        # Closed: suggest retrying when the breaker will next probe Redis.
        wait = min(self.period, self.rr.breaker.reset_timeout)
        return RateLimitResult(False, self.limit, 0, wait, wait, "fallback-closed")


class _WindowedLimiter(RateLimiter):
    """Counts per epoch-aligned window, each in its own string key ``<key>:@<window index>``."""

    def counter_key(self, identifier: object, server_time_us: int) -> str:
        return f"{self.key(identifier)}:@{server_time_us // self.period_us}"


class FixedWindowLimiter(_WindowedLimiter):
    """Epoch-aligned windows of one period; cheapest, but 2× limit across an edge."""

    algorithm = "fixed_window"

    def _reset_when_allowed(self, now_us: int) -> int:
        return self.period_us - now_us % self.period_us  # the window's end


class SlidingLogLimiter(RateLimiter):
    """Exact sliding window over a log of admissions; memory O(limit) per identifier."""

    algorithm = "sliding_log"


class SlidingWindowCounterLimiter(_WindowedLimiter):
    """Weighted current + previous window counts; O(1) memory, approximate."""

    algorithm = "sliding_window"

    def _reset_when_allowed(self, now_us: int) -> int:
        return 2 * self.period_us - now_us % self.period_us  # the next window's end

    def state_keys(self, identifier: object, server_time_us: int) -> tuple[str, ...]:
        """The current window's counter and the previous one's."""
        return (self.counter_key(identifier, server_time_us),
                self.counter_key(identifier, server_time_us - self.period_us))  # fmt: skip


class _BurstLimiter(RateLimiter):
    """Rate ``limit/period`` with a separate ``burst`` (defaults to ``limit``)."""

    def __init__(self, rr: ResilientRedis, limit: int, period: float, *, burst: int | None = None,
                 **kwargs: Any) -> None:
        _limit, _period_us, self.burst = validate_rate(limit, period, burst)
        super().__init__(rr, limit, period, **kwargs)

    @property
    def capacity(self) -> int:
        return self.burst

    def _args(self, cost: int) -> list[int]:
        return [self.limit, self.period_us, cost, self.burst]

    def _result(self, reply: list[int]) -> RateLimitResult:
        """``{allowed, remaining, reset_us, retry_us, now}``."""
        allowed, remaining, reset_us, retry_us, now_us = reply
        return RateLimitResult(
            bool(allowed),
            self.limit,
            int(remaining),
            reset_us / 1_000_000,
            retry_us / 1_000_000 if not allowed else 0.0,
            "redis",
            int(now_us),
        )


class TokenBucketLimiter(_BurstLimiter):
    """A bucket of ``burst`` tokens refilled at ``limit/period``."""

    algorithm = "token_bucket"


class GCRALimiter(_BurstLimiter):
    """Generic cell rate algorithm: token-bucket behaviour in one string key."""

    algorithm = "gcra"


ALGORITHMS: dict[str, type[RateLimiter]] = {
    cls.algorithm: cls
    for cls in (
        FixedWindowLimiter,
        SlidingLogLimiter,
        SlidingWindowCounterLimiter,
        TokenBucketLimiter,
        GCRALimiter,
    )
}
_ALIASES = {"sliding_window_counter": "sliding_window", "fixed": "fixed_window", "log": "sliding_log"}


def algorithm_name(algorithm: str) -> str:
    """The canonical name (``"Sliding-Window-Counter"`` → ``"sliding_window"``), or ValueError."""
    name = algorithm.strip().lower().replace("-", "_")
    name = _ALIASES.get(name, name)
    if name not in ALGORITHMS:
        raise ValueError(f"unknown rate-limit algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}")
    return name


def create_limiter(
    rr: ResilientRedis,
    algorithm: str,
    limit: int | str,
    period: float | None = None,
    failure_policy: FailurePolicy = "open",
    prefix: str = DEFAULT_PREFIX,
    **kwargs: Any,
) -> RateLimiter:
    """A limiter by algorithm name; ``limit`` may be a string like ``"100/60s"`` (then no period)."""
    cls = ALGORITHMS[algorithm_name(algorithm)]
    if isinstance(limit, str):
        if period is not None:
            raise ValueError("give either a limit string like '100/60s' or limit and period, not both")
        limit, period = parse_limit(limit)
    if period is None:
        raise ValueError("period (seconds) is required when limit is a number")
    return cls(rr, limit, period, failure_policy=failure_policy, prefix=prefix, **kwargs)


# -- measuring ----------------------------------------------------------------


def max_in_window(times_us: Sequence[int], window_us: int) -> int:
    """The largest number of events in any half-open interval ``[t, t + window)``.

    Used to measure the worst burst a limiter admitted: feed it the
    ``server_time_us`` of the allowed results (one entry per unit of cost).
    """
    ordered = sorted(times_us)
    best = start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window_us:
            start += 1
        best = max(best, end - start + 1)
    return best


# -- the seed's version, for comparison only ---------------------------------


async def naive_fixed_window(
    redis_client: redis.asyncio.Redis,
    identifier: object,
    limit: int,
    window: int,
    *,
    prefix: str = DEFAULT_PREFIX,
    between: Callable[[], Awaitable[None]] | None = None,
) -> bool:
    """The seed's limiter: INCR, then EXPIRE in a second call if the count is 1. Do not use.

    Two round trips and not atomic: if the caller dies between them (``between``
    lets a test stop there) the counter never expires. Only the INCR/EXPIRE
    flaw is reproduced; the key is still escaped so benchmarks stay safe.
    """
    key = make_key(prefix, identifier, "rl", "naive")
    current = await redis_client.incr(key)
    if between is not None:
        await between()
    if current == 1:
        await redis_client.expire(key, window)
    return current <= limit
