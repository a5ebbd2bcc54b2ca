"""Everything one app process holds: one Redis pool, one database engine, the patterns."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cachelab.app.caching import AppCaches
from cachelab.app.db import Database
from cachelab.app.passwords import PasswordChecker
from cachelab.client import ResilientRedis
from cachelab.config import Network, Settings, parse_networks
from cachelab.patterns.concurrency import ConcurrencyLimiter
from cachelab.patterns.leaderboard import Leaderboard
from cachelab.patterns.queue import JobQueue
from cachelab.patterns.ratelimit import RateLimiter, create_limiter, parse_limit
from cachelab.patterns.ratelimit_lease import QuotaLeases
from cachelab.patterns.session_trust import TrustedSessions
from cachelab.patterns.sessions import SessionStore
from cachelab.patterns.stream_queue import StreamQueue, create_queue

REPORT_QUEUE = "reports"
#: The slow endpoints whose requests in flight are limited per tenant (CACHELAB_TENANT_CONCURRENCY).
CONCURRENCY_LIMITED = ("reports", "export")


@dataclass
class AppState:
    settings: Settings
    rr: ResilientRedis
    db: Database
    caches: AppCaches
    limiters: dict[str, RateLimiter]
    sessions: SessionStore
    queue: JobQueue | StreamQueue
    leaderboard: Leaderboard
    passwords: PasswordChecker
    concurrency: dict[str, ConcurrencyLimiter] = field(default_factory=dict)
    trusted_proxies: tuple[Network, ...] = ()
    queue_stats: dict[str, Any] | None = field(default=None)
    #: CACHELAB_FAST_READS (:mod:`cachelab.app.fast_reads`): sessions read in the last
    #: CACHELAB_SESSION_TRUST seconds, and leases of the request limiters' quota ("ip", "session").
    trusted: TrustedSessions | None = None
    #: Every session this process read in the last minute. Only a hint of whose entry a route keyed
    #: by its caller (the dashboard) reads in the auth round; that round's own session read decides.
    seen_sessions: TrustedSessions = field(default_factory=lambda: TrustedSessions(60.0))
    leases: dict[str, QuotaLeases] = field(default_factory=dict)
    #: What the fast-read middleware did with each request for a fast-read route, by outcome.
    fast_reads: Counter[str] = field(default_factory=Counter)

    @classmethod
    def build(
        cls, settings: Settings, rr: ResilientRedis, db: Database, *, durable: ResilientRedis | None = None
    ) -> AppState:
        """``durable`` (QUEUE_REDIS_URL) holds what must never be evicted: the queue, sessions and the
        login limiters (an evicted login counter is a fresh budget of password guesses)."""
        durable = durable or rr
        limit, period = parse_limit(settings.rate_limit)
        limiters = {
            "ip": create_limiter(
                rr, settings.rate_limit_algorithm, limit, period, settings.rate_limit_failure, prefix="cl:ip"
            ),
            "session": create_limiter(
                rr,
                settings.rate_limit_algorithm,
                limit,
                period,
                settings.rate_limit_failure,
                prefix="cl:sess",
            ),
            # Login attempts: GCRA whatever the request limiter's algorithm, so "<n>/<period>" is a
            # burst of n and then n per period. While Redis is down the in-process fallback still
            # limits (per process), and the login itself needs the session store anyway.
            "login_ip": create_limiter(
                durable, "gcra", settings.login_rate_limit_ip, failure_policy="local", prefix="cl:login-ip"
            ),
            "login_account": create_limiter(
                durable,
                "gcra",
                settings.login_rate_limit_account,
                failure_policy="local",
                prefix="cl:login-acct",
            ),
        }
        return cls(
            settings=settings,
            rr=rr,
            db=db,
            caches=AppCaches.build(rr, settings),
            limiters=limiters,
            sessions=SessionStore(durable, idle_timeout=1800, absolute_lifetime=12 * 3600),
            queue=create_queue(settings.queue_backend, durable, REPORT_QUEUE, lease_seconds=60,
                               max_deliveries=3, allow_evicting=True),
            leaderboard=Leaderboard(rr),
            passwords=PasswordChecker(),
            # Per tenant: one tenant's slow requests cannot take every app worker. Fail open: while
            # Redis is down these endpoints keep working (the rate limiters still apply).
            concurrency={
                name: ConcurrencyLimiter(rr, settings.tenant_concurrency, lease_seconds=60, name=name)
                for name in CONCURRENCY_LIMITED
            },
            trusted_proxies=parse_networks(settings.trusted_proxies),
            trusted=TrustedSessions(settings.session_trust) if settings.fast_reads else None,
            leases={name: QuotaLeases(limiters[name]) for name in ("ip", "session") if settings.fast_reads},
        )
