"""Circuit breaker, bounded background work and fail-open helpers.

The guide's client waits the full 2 s connect timeout on *every* request while
Redis is down, and its ``withCacheFallback`` fires unbounded fire-and-forget
writes. Here:

* :class:`CircuitBreaker` counts infrastructure failures (connection errors and
  timeouts, not application errors such as a wrong-type reply). After
  ``failure_threshold`` consecutive failures it *opens*: calls fail at once
  with :class:`CircuitOpenError` for ``reset_timeout`` seconds. Then it lets
  ``half_open_max_calls`` probes through (*half-open*); a success closes it, a
  failure opens it again. A down Redis therefore costs a few timeouts, not one
  per request.
* :class:`BackgroundTasks` runs background cache writes and refreshes with a
  hard cap; when full, or when the breaker is open, new work is dropped and
  counted rather than queued without bound.
* :func:`fail_open` is "on Redis failure, do this instead".
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.exceptions

T = TypeVar("T")
log = logging.getLogger("cachelab.resilience")


class RedisUnavailable(Exception):
    """Redis could not be used for this call (down, hung, or the breaker is open)."""


class CircuitOpenError(RedisUnavailable):
    """The breaker is open: the call was not attempted."""


#: Exceptions that mean "the server is unreachable or too slow", as opposed to a bug.
INFRA_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    OSError,
    asyncio.TimeoutError,
)


def is_out_of_memory(exc: BaseException) -> bool:
    """A write refused at maxmemory (directly, or from inside a Lua script on Redis 6.2 and 7)."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM command not allowed" in str(exc)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class BreakerStats:
    calls: int = 0
    successes: int = 0
    failures: int = 0
    short_circuited: int = 0
    times_opened: int = 0


class CircuitBreaker:
    """A closed / open / half-open breaker for one dependency (one Redis)."""

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        reset_timeout: float = 1.0,
        half_open_max_calls: int = 1,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        name: str = "redis",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if reset_timeout <= 0:
            raise ValueError("reset_timeout must be > 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.half_open_max_calls = half_open_max_calls
        self.enabled = enabled
        self.name = name
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._half_open_in_flight = 0
        self.stats = BreakerStats()
        self.listeners: list[Callable[[BreakerState, BreakerState], None]] = []

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
            self.stats.times_opened += 1
        if new is BreakerState.HALF_OPEN:
            self._half_open_in_flight = 0
        if new is BreakerState.CLOSED:
            self._consecutive_failures = 0
        if old is not new:
            log.warning("circuit %s: %s -> %s", self.name, old.value, new.value)
            for listener in self.listeners:
                listener(old, new)

    def allow(self) -> bool:
        """May a call go through now? (Reserves a half-open probe slot if so.)"""
        if not self.enabled:
            return True
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._half_open_in_flight < self.half_open_max_calls:
            self._half_open_in_flight += 1
            return True
        return False

    def record_success(self) -> None:
        self.stats.successes += 1
        self._consecutive_failures = 0
        if self._state is BreakerState.HALF_OPEN:
            self._transition(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self.stats.failures += 1
        self._consecutive_failures += 1
        if not self.enabled:
            return  # counted, but a disabled breaker never opens
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._consecutive_failures >= self.failure_threshold
        ):
            self._transition(BreakerState.OPEN)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` through the breaker.

        Raises :class:`CircuitOpenError` without calling ``fn`` while open, and
        :class:`RedisUnavailable` (chained to the cause) on an infrastructure
        failure. Application errors pass through untouched and do not count.
        """
        self.stats.calls += 1
        if not self.allow():
            self.stats.short_circuited += 1
            raise CircuitOpenError(f"circuit {self.name} is open")
        try:
            result = await fn(*args, **kwargs)
        except INFRA_ERRORS as exc:
            self.record_failure()
            raise RedisUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        except asyncio.CancelledError:
            if self._state is BreakerState.HALF_OPEN:
                self._half_open_in_flight = max(0, self._half_open_in_flight - 1)
            raise
        except redis.exceptions.ResponseError as exc:
            self.record_success()  # the server answered: it is up
            if is_out_of_memory(exc):
                # Full (noeviction, or maxmemory below the overhead): writes are refused while
                # reads still work. Callers get their "Redis unavailable" path (fail open, or
                # their failure policy) instead of a 500; the breaker stays closed for reads.
                raise RedisUnavailable(f"{self.name}: out of memory: {exc}") from exc
            raise
        except BaseException:
            # The server answered (e.g. WRONGTYPE); it is up.
            self.record_success()
            raise
        self.record_success()
        return result

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "consecutive_failures": self._consecutive_failures,
            **self.stats.__dict__,
        }


@dataclass
class BackgroundStats:
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    dropped: int = 0


class BackgroundTasks:
    """Fire-and-forget work with a ceiling.

    ``submit`` never blocks and never queues without bound: past
    ``max_pending`` tasks the work is dropped (and counted). A dropped cache
    write only costs a later miss; an unbounded queue of them costs the process.
    """

    def __init__(self, max_pending: int = 256) -> None:
        self.max_pending = max_pending
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stats = BackgroundStats()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def submit(self, coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> bool:
        if len(self._tasks) >= self.max_pending:
            self.stats.dropped += 1
            return False
        self.stats.submitted += 1
        # An empty context: background work is not billed to the request that happened to start it
        # (cachelab.request_cost), and does not inherit anything else request-scoped either.
        task = asyncio.get_running_loop().create_task(self._run(coro_fn), context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        try:
            await coro_fn()
        except Exception as exc:  # background work must never crash the loop
            self.stats.failed += 1
            log.debug("background task failed: %r", exc)
        else:
            self.stats.completed += 1

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for pending work (at shutdown, or in tests); cancel what is left."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task


async def fail_open(
    primary: Callable[[], Awaitable[T]],
    fallback: Callable[[], Awaitable[T]],
    *,
    on_error: Callable[[BaseException], None] | None = None,
) -> T:
    """Return ``await primary()``, or ``await fallback()`` if Redis is unavailable.

    Only :class:`RedisUnavailable` triggers the fallback: a bug in ``primary``
    should surface, not be masked as an outage.
    """
    try:
        return await primary()
    except RedisUnavailable as exc:
        if on_error is not None:
            on_error(exc)
        return await fallback()
