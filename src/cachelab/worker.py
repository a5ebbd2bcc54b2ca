"""``cachelab worker``: runs job handlers against a job queue.

The queue is :class:`~cachelab.patterns.queue.JobQueue` (sorted sets + Lua), or with
``CACHELAB_QUEUE_BACKEND=streams`` (or ``--backend streams``)
:class:`~cachelab.patterns.stream_queue.StreamQueue` (a Streams consumer group); both
have the same calls, and this worker runs either.

The seed's worker is ``while (true) { BRPOP; process }``: no way to stop it
without losing the job in hand. A :class:`Worker` here:

* runs ``concurrency`` jobs at once; one background task per worker extends
  the leases of all jobs in hand, one ``extend_leases`` call every
  ``lease_seconds / 3`` (so a slow job is not reaped while alive);
* acks a finished job with the call that also takes the slot's next job
  (``ack_and_reserve``: one round trip per job, on either backend, while
  there is a backlog); it waits for work (``reserve`` with ``poll_timeout``) only
  when that call found nothing due;
* in burst mode (``--burst``) exits as soon as no job it can do is due,
  without waiting out a poll timeout;
* calls the handler registered for ``payload["type"]``; success acks with the
  handler's result (which must be JSON), an exception fails the job (retry
  with backoff, dead-letter after ``max_deliveries``);
* hands back, without counting the delivery, a job whose type it has no
  handler for (due again after a growing delay, logged as a warning): a
  worker that is missing a handler must not use up a job's deliveries and
  dead-letter it, but leave it for a worker that has one;
* runs a reaper tick, so jobs of crashed workers come back even when every
  other worker is busy;
* on SIGTERM/SIGINT stops reserving, lets jobs in hand finish within
  ``grace_period``, hands back the rest (due at once, delivery not counted),
  and exits 0. A second signal ends the grace period at once.

Handlers: ``async def handler(payload: dict) -> result``. A worker has the
built-ins ``echo`` and ``sleep`` (tests, smoke checks), the sample app's
(``report``, from :mod:`cachelab.app.jobs`; ``--no-app-handlers`` leaves them
out), and any named by ``--handlers module:attr`` where ``attr`` is a mapping
``{type: handler}`` or a zero-argument callable returning one. So plain
``cachelab worker`` serves the app's ``reports`` queue.

The command line is defined here (:func:`add_arguments`), not in
:mod:`cachelab.cli`, so ``python -m cachelab.worker`` needs no import of the
CLI and the CLI imports this module only when it builds its parser.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from cachelab.patterns.queue import EvictingRedisError, Job, JobQueue
from cachelab.patterns.stream_queue import BACKENDS, StreamQueue, create_queue
from cachelab.resilience import RedisUnavailable

log = logging.getLogger("cachelab.worker")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


APP_HANDLERS = "cachelab.app.jobs:HANDLERS"
# The job types APP_HANDLERS serves (a test keeps the two equal). Named here so that a worker
# does not import the app (SQLAlchemy: ~0.4 s) before its first app job: start-up speed is
# what lets a crashed or redeployed worker's replacement take over quickly.
APP_JOB_TYPES = ("report",)
_MAX_TRACKED_DEFERRALS = 10_000


class UnknownJobType(LookupError):
    """No handler is registered for the job's type (the worker hands such a job back instead)."""


async def echo_handler(payload: dict[str, Any]) -> Any:
    """Return ``payload["data"]`` (or the payload): the smallest possible job."""
    return payload.get("data", payload)


async def sleep_handler(payload: dict[str, Any]) -> Any:
    """Sleep ``payload["seconds"]`` (at most an hour): a stand-in for slow work."""
    seconds = min(float(payload.get("seconds", 0.1)), 3600.0)
    await asyncio.sleep(seconds)
    return {"slept": seconds}


BUILTIN_HANDLERS: dict[str, Handler] = {"echo": echo_handler, "sleep": sleep_handler}


def _app_handler(job_type: str) -> Handler:
    """The sample app's handler for ``job_type``, imported on its first call."""

    async def handler(payload: dict[str, Any]) -> Any:
        module_name, _, attr = APP_HANDLERS.partition(":")
        return await getattr(importlib.import_module(module_name), attr)[job_type](payload)

    return handler


def load_handlers(specs: list[str] | None, *, app: bool = False) -> dict[str, Handler]:
    """The built-in handlers, the sample app's if ``app``, and those named by ``module:attr`` specs."""
    handlers = dict(BUILTIN_HANDLERS)
    if app:
        handlers.update({job_type: _app_handler(job_type) for job_type in APP_JOB_TYPES})
    for spec in specs or []:
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise ValueError(f"--handlers expects module:attr, got {spec!r}")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        if callable(obj) and not isinstance(obj, Mapping):
            obj = obj()
        if not isinstance(obj, Mapping):
            raise ValueError(f"{spec} is not a mapping of job type to handler")
        handlers.update(obj)
    return handlers


class Worker:
    """Processes jobs from one queue until stopped (or, in burst mode, until none is due)."""

    def __init__(
        self,
        queue: JobQueue | StreamQueue,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 1,
        grace_period: float = 8.0,
        burst: bool = False,
        poll_timeout: float = 1.0,
        job_timeout: float | None = None,
        reaper_interval: float | None = None,
        consumer_prefix: str | None = None,
        defer_base: float = 1.0,
        defer_cap: float = 60.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.queue = queue
        self.handlers = dict(handlers)
        self.concurrency = concurrency
        self.grace_period = grace_period
        self.burst = burst
        self.poll_timeout = poll_timeout
        self.job_timeout = job_timeout
        self.reaper_interval = reaper_interval or max(0.05, queue.lease_seconds / 2)
        self.consumer_prefix = consumer_prefix or f"{socket.gethostname()}:{os.getpid()}"
        self.defer_base = defer_base
        self.defer_cap = defer_cap
        self.processed = 0
        self.failed = 0
        self.handed_back = 0
        self.deferred = 0
        self._deferrals: dict[str, int] = {}  # job id -> times this worker handed it back
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._grace_timer: asyncio.TimerHandle | None = None
        # Jobs whose handler is running, by (id, token): what the one lease extender extends.
        self._in_hand: dict[tuple[str, str], Job] = {}
        self._handler_tasks: set[asyncio.Task[Any]] = set()  # cancelled when the grace period ends
        self._closing = False  # run() is over: the reaper and the lease extender return

    # -- shutdown ----------------------------------------------------------
    def request_stop(self) -> None:
        """First call: stop reserving and start the grace period. Second call: end it now."""
        if self._stopping.is_set():
            log.warning("second stop request: handing back jobs in progress now")
            self._end_grace()
            return
        log.info("stopping: finishing jobs in hand (grace period %.1fs)", self.grace_period)
        self._stopping.set()
        loop = asyncio.get_running_loop()
        self._grace_timer = loop.call_later(self.grace_period, self._end_grace)

    def _end_grace(self) -> None:
        """Interrupt every running handler: their jobs are handed back (see :meth:`_process`)."""
        self._force.set()
        for task in self._handler_tasks:
            task.cancel()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    # -- main loop ---------------------------------------------------------
    async def run(self) -> int:
        """Run until stopped; returns the process exit code (0 after a graceful stop)."""
        slots = [asyncio.create_task(self._slot(i)) for i in range(self.concurrency)]
        helpers = [asyncio.create_task(self._reaper()), asyncio.create_task(self._lease_extender())]
        try:
            await asyncio.gather(*slots)
        finally:
            # The flag, not only cancel(): a cancel that lands inside a Redis call can be lost
            # (the call then returns normally; seen with redis-py 8 on Python 3.11), and a
            # helper that loops on would keep run() from returning: a worker that never exits
            # on SIGTERM. Each helper checks the flag after every call.
            self._closing = True
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._grace_timer is not None:
                self._grace_timer.cancel()
        return 0

    async def _slot(self, index: int) -> None:
        """One slot's loop. A finished job is acked by the call that also takes the next one
        (``ack_and_reserve``), so a busy slot pays one round trip per job; ``reserve`` (which
        waits up to ``poll_timeout`` for work) is called only when that found nothing due.
        In burst mode nothing waits: the slot returns as soon as no job is due."""
        consumer = f"{self.consumer_prefix}:{index}"
        backoff = 0.05
        job: Job | None = None
        while True:
            if job is None:
                if self._stopping.is_set():
                    return
                try:
                    job = await self.queue.reserve(consumer, timeout=0 if self.burst else self.poll_timeout)
                except RedisUnavailable as exc:
                    log.warning("reserve failed (%s); retrying in %.2fs", exc, backoff)
                    await self._sleep_unless_stopping(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.05
                if job is None:
                    if self.burst:
                        return
                    continue
            if job.type not in self.handlers:
                seen_before = job.id in self._deferrals
                await self._defer(job)
                job = None
                if self.burst and seen_before:
                    return  # what is left due is work this worker cannot do
                continue
            job, asked = await self._process(job, consumer)
            if job is None and asked and self.burst:
                return  # the ack found nothing due: done, without asking again

    async def _defer(self, job: Job) -> None:
        """Hand back a job this worker has no handler for: delivery not counted, due again later.

        The delay doubles each time this worker meets the same job (1 s, 2 s, ... 60 s), so a
        worker without the handler neither spins on it nor starves the jobs behind it.
        """
        count = self._deferrals.get(job.id, 0)
        if len(self._deferrals) >= _MAX_TRACKED_DEFERRALS:
            self._deferrals.clear()
        self._deferrals[job.id] = count + 1
        delay = min(self.defer_cap, self.defer_base * 2**min(count, 30))
        await self._settle(self.queue.release, job, delay)
        self.deferred += 1
        log.warning(
            "job %s: no handler for type %r in this worker (it has: %s); handed back to queue %r "
            "for a worker that has one, delivery not counted, due again in %.0fs",
            job.id, job.type, ", ".join(sorted(self.handlers)), self.queue.name, delay,
        )

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _reaper(self) -> None:
        while not self._closing:  # checked after every call: see run()
            await asyncio.sleep(self.reaper_interval)
            try:
                requeued, dead = await self.queue.reap()
            except RedisUnavailable as exc:
                log.debug("reaper tick failed: %s", exc)
                continue
            if requeued or dead:
                log.info("reaper: %d job(s) re-queued, %d dead-lettered after lost leases",
                         requeued, dead)

    async def _run_handler(self, job: Job) -> Any:
        handler = self.handlers.get(job.type or "")
        if handler is None:
            raise UnknownJobType(f"no handler for job type {job.type!r}")
        if self.job_timeout is None:
            return await handler(job.payload)
        async with asyncio.timeout(self.job_timeout):
            return await handler(job.payload)

    async def _lease_extender(self) -> None:
        """The worker's one lease extender: every ``lease_seconds / 3``, one ``extend_leases``
        call for all jobs whose handler is running (none when no job is in hand)."""
        interval = max(0.02, self.queue.lease_seconds / 3)
        while not self._closing:  # checked after every call: see run()
            await asyncio.sleep(interval)
            held = list(self._in_hand.items())
            if not held:
                continue
            try:
                extended = await self.queue.extend_leases([job for _, job in held])
            except RedisUnavailable as exc:
                log.warning("could not extend the lease of %d job(s) in hand: %s", len(held), exc)
                continue
            for (key, job), ok in zip(held, extended, strict=True):
                # A job whose handler finished meanwhile left _in_hand before its ack: no warning.
                if not ok and self._in_hand.pop(key, None) is not None:
                    log.warning("job %s: lease lost while running; it may run twice", job.id)

    async def _process(self, job: Job, consumer: str) -> tuple[Job | None, bool]:
        """Run ``job``'s handler and settle it; return (the next job, whether one was asked for).

        Success acks and, unless the worker is stopping, leases the next due job in the same
        round trip (``ack_and_reserve``). A failure fails the job; a handler still running when
        the grace period ends is cancelled and its job handed back; neither asks for a next job.
        """
        key = (job.id, job.token)
        if self._force.is_set():
            await self._hand_back(job)
            return None, False
        self._in_hand[key] = job
        task = asyncio.create_task(self._run_handler(job))
        self._handler_tasks.add(task)
        exc: BaseException | None = None
        try:
            result = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not (task.cancelled() and self._force.is_set()) or (current and current.cancelling()):
                raise
            await self._hand_back(job)
            return None, False
        except Exception as err:
            exc = err
        finally:
            self._handler_tasks.discard(task)
            self._in_hand.pop(key, None)  # before the ack: the extender must not see it settle
        if exc is None:
            try:
                result = orjson.loads(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS))
            except TypeError as err:
                exc = err
        if exc is not None:
            self.failed += 1
            error = f"{type(exc).__name__}: {exc}"
            outcome = await self._settle(self.queue.fail, job, error)
            log.info("job %s failed on delivery %d (%s): %s", job.id, job.deliveries, outcome, error)
            return None, False
        self.processed += 1
        if self._stopping.is_set():
            await self._settle(self.queue.ack, job, result)
            return None, False
        settled = await self._settle(self.queue.ack_and_reserve, job, result, consumer)
        if settled is None:  # Redis stayed away: the slot's reserve loop backs off
            return None, False
        return settled[1], True

    async def _hand_back(self, job: Job) -> None:
        await self._settle(self.queue.release, job)
        self.handed_back += 1
        log.info("job %s handed back at shutdown", job.id)

    async def _settle(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """ack/fail/release with a few retries; if Redis stays away the lease expiry recovers the job.

        A retried ``ack_and_reserve`` whose first attempt did reach Redis finds its ack refused
        (lease already gone, logged) and leases another job; the job the lost reply held is
        re-delivered when its lease expires, as for a lost ``reserve`` reply.
        """
        delay = 0.05
        for attempt in range(5):
            try:
                return await fn(*args)
            except RedisUnavailable as exc:
                if attempt == 4:
                    log.error("giving up on %s for job %s: %s; it will be re-delivered",
                              fn.__name__, args[0].id, exc)
                    return None
                await asyncio.sleep(delay)
                delay *= 2
        return None


# -- command line ------------------------------------------------------------
async def _connect_and_check(
    queue: JobQueue | StreamQueue, worker: Worker, allow_evicting: bool
) -> str | None:
    """Eviction check, waiting (up to 30 s, or until stopped) for Redis to come up."""
    delay = 0.1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        try:
            await queue.check_eviction_policy(allow_evicting)
            return None
        except RedisUnavailable as exc:
            if worker._stopping.is_set() or loop.time() > deadline:
                return f"cannot reach Redis: {exc}"
            log.warning("waiting for Redis: %s", exc)
            await worker._sleep_unless_stopping(delay)
            delay = min(delay * 2, 2.0)


async def _amain(args: argparse.Namespace) -> int:
    from cachelab.client import redact_url
    from cachelab.config import get_settings

    settings = get_settings()
    if not settings.durable_redis_url:
        print(
            "cachelab worker: REDIS_URL is not set. Set REDIS_URL (or QUEUE_REDIS_URL) to the Redis "
            "the app uses "
            "(e.g. REDIS_URL=redis://127.0.0.1:6379/0): a worker must share the app's queue.",
            file=sys.stderr,
        )
        return 2
    try:
        handlers = load_handlers(getattr(args, "handlers", None),
                                 app=not getattr(args, "no_app_handlers", False))
    except (ImportError, AttributeError, ValueError) as exc:
        print(f"cachelab worker: cannot load handlers: {exc}", file=sys.stderr)
        return 2
    backend = getattr(args, "backend", None) or settings.queue_backend
    rr = settings.redis_client(settings.durable_redis_url)
    try:
        queue = create_queue(
            backend,
            rr,
            args.queue,
            lease_seconds=getattr(args, "lease_seconds", 30.0),
            max_deliveries=getattr(args, "max_deliveries", 5),
            allow_evicting=args.allow_evicting_redis,
        )
        worker = Worker(
            queue,
            handlers,
            concurrency=args.concurrency,
            grace_period=getattr(args, "grace_period", 8.0),
            burst=args.burst,
        )
        worker.install_signal_handlers()
        try:
            problem = await _connect_and_check(queue, worker, args.allow_evicting_redis)
        except EvictingRedisError as exc:
            print(f"cachelab worker: {exc}", file=sys.stderr)
            return 2
        if problem:
            print(f"cachelab worker: {problem} ({redact_url(settings.durable_redis_url)})", file=sys.stderr)
            return 1
        log.info("worker %s: queue %r (%s backend), concurrency %d, handlers %s", worker.consumer_prefix,
                 args.queue, backend, args.concurrency, sorted(handlers))
        code = await worker.run()
        log.info("worker stopped: %d done, %d failed, %d handed back, %d deferred (no handler)",
                 worker.processed, worker.failed, worker.handed_back, worker.deferred)
        return code
    finally:
        await rr.aclose()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``cachelab worker`` flags (also used by ``python -m cachelab.worker``)."""
    p.add_argument("--queue", default="reports", help="queue name (default: reports, the sample app's)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="queue implementation: list (sorted sets + Lua) or streams (a consumer group); "
        "default: CACHELAB_QUEUE_BACKEND, else list. Must match the app's.",
    )
    p.add_argument("--concurrency", type=int, default=1, help="jobs processed at once per process")
    p.add_argument("--burst", action="store_true", help="exit when no job this worker can do is due")
    p.add_argument(
        "--allow-evicting-redis",
        action="store_true",
        help="run even if the server's maxmemory-policy could evict queue keys",
    )
    p.add_argument(
        "--handlers",
        action="append",
        metavar="MODULE:ATTR",
        help="extra job handlers: a {job_type: async fn(payload)} mapping, or a callable returning "
        f"one (repeatable; always loaded: echo, sleep, and the sample app's {APP_HANDLERS})",
    )
    p.add_argument(
        "--no-app-handlers",
        action="store_true",
        help="leave out the sample app's handlers (report); jobs of a type this worker has no "
        "handler for are handed back for another worker, never failed",
    )
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=30.0,
        help="visibility timeout before a silent worker's job is re-delivered (default: 30)",
    )
    p.add_argument(
        "--max-deliveries", type=int, default=5, help="deliveries before a job is dead-lettered (default: 5)"
    )
    p.add_argument(
        "--grace-period",
        type=float,
        default=8.0,
        help="seconds to finish jobs in hand after SIGTERM before handing them back "
        "(default: 8, inside docker's 10 s stop timeout)",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``worker`` on the ``cachelab`` command's subparsers."""
    p = sub.add_parser(
        "worker",
        help="run job-queue workers (by default: the sample app's report jobs)",
        description="Process jobs from a queue on QUEUE_REDIS_URL (else REDIS_URL) until stopped.",
    )
    add_arguments(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``cachelab worker``."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(_amain(args))


if __name__ == "__main__":  # ``python -m cachelab.worker ...`` == ``cachelab worker ...``
    _parser = argparse.ArgumentParser(prog="cachelab worker")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
