"""The app's caches, and the cache-mode switch load tests flip between runs.

``CACHELAB_CACHE_MODE`` picks the strategy for every read cache without code
changes, so one Locust scenario can compare them:

=============== ==========================================================
``off``         no cache; every request reads the database (X-Cache: BYPASS)
``cache-aside`` TTL + jitter, negative caching, in-process single-flight
``refresh-ahead`` as cache-aside, refreshed in the background near expiry
``swr``         stale-while-revalidate: fresh for the TTL, stale up to 2×TTL
``xfetch``      probabilistic early refresh (XFetch, beta 1)
``lock``        cache-aside plus a cross-process lock on misses
=============== ==========================================================

``CACHELAB_NEAR_CACHE=on`` (``serve --near-cache``) puts the hot caches —
tenants, KPIs, areas, users, dashboards — behind one in-process L1 per
process (:mod:`cachelab.patterns.near_cache`), whatever the mode but ``off``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cachelab.client import ResilientRedis
from cachelab.config import Settings
from cachelab.patterns.aggregation import DailyAggregate
from cachelab.patterns.cache import Cache, CachePolicy
from cachelab.patterns.envelope import EntryCodec
from cachelab.patterns.near_cache import NearCache, NearCacheStore


def policy_for(mode: str, ttl: float, jitter: float) -> CachePolicy | None:
    """The :class:`CachePolicy` a cache with base ``ttl`` gets in ``mode`` (None for off)."""
    if mode == "off":
        return None
    base = CachePolicy(ttl=ttl, jitter=jitter)
    if mode == "cache-aside":
        return base
    if mode == "refresh-ahead":
        return CachePolicy(ttl=ttl, jitter=jitter, refresh_ahead=0.2)
    if mode == "swr":
        return CachePolicy(ttl=ttl * 2, soft_ttl=ttl, jitter=jitter)
    if mode == "xfetch":
        return CachePolicy(ttl=ttl, jitter=jitter, xfetch_beta=1.0)
    if mode == "lock":
        return CachePolicy(ttl=ttl, jitter=jitter, lock=True)
    raise ValueError(f"unknown cache mode {mode!r}")


@dataclass
class AppCaches:
    """Every cache the dashboard uses; ``None`` fields mean caching is off."""

    mode: str
    tenants: Cache | None
    kpis: Cache | None
    areas: Cache | None
    users: Cache | None
    initiatives: Cache | None  # list pages: response cache, canonical keys, tag "initiatives"
    initiative: Cache | None  # single rows: write-through with a version guard
    stats: DailyAggregate | None
    dashboard: Cache | None  # soft + hard TTL, tag "dashboards"
    near: NearCacheStore | None = None  # the in-process L1 of the hot caches (CACHELAB_NEAR_CACHE)

    @classmethod
    def build(cls, rr: ResilientRedis, settings: Settings) -> AppCaches:
        mode = settings.cache_mode
        codec = EntryCodec(max_bytes=settings.max_value_bytes)
        near = None
        if settings.near_cache and mode != "off":
            near = NearCacheStore(
                rr, max_age=settings.near_cache_max_age, max_bytes=settings.near_cache_max_bytes
            )

        def make(
            namespace: str, ttl: float, policy: CachePolicy | None = None, hot: bool = False
        ) -> Cache | None:
            policy = policy or policy_for(mode, ttl, settings.ttl_jitter)
            if not policy:
                return None
            if hot and near is not None:
                return NearCache(rr, namespace, policy, codec=codec, store=near)
            return Cache(rr, namespace, policy, codec=codec)

        dashboard_policy = None
        if mode != "off":
            dashboard_policy = CachePolicy(
                ttl=settings.dashboard_ttl,
                soft_ttl=min(settings.dashboard_soft_ttl, settings.dashboard_ttl),
                jitter=settings.ttl_jitter,
                lock=mode == "lock",
                xfetch_beta=1.0 if mode == "xfetch" else 0.0,
            )
        stats_cache = make("stats", 3600)
        return cls(
            mode=mode,
            tenants=make("tenants", settings.areas_ttl, hot=True),
            kpis=make("kpi", settings.kpi_ttl, hot=True),
            areas=make("areas", settings.areas_ttl, hot=True),
            users=make("users", settings.areas_ttl, hot=True),
            initiatives=make("initiatives", settings.list_ttl),
            initiative=make("initiative", settings.list_ttl * 10),
            stats=DailyAggregate(stats_cache) if stats_cache else None,
            dashboard=make("dashboard", settings.dashboard_ttl, dashboard_policy, hot=True),
            near=near,
        )

    async def start(self) -> None:
        """Open the near cache's invalidation connection (in the background; reads bypass it until then)."""
        if self.near is not None:
            await self.near.start()

    async def aclose(self) -> None:
        if self.near is not None:
            await self.near.aclose()

    def all(self) -> dict[str, Cache]:
        caches = {
            "tenants": self.tenants,
            "kpis": self.kpis,
            "areas": self.areas,
            "users": self.users,
            "initiatives": self.initiatives,
            "initiative": self.initiative,
            "stats": self.stats.cache if self.stats else None,
            "dashboard": self.dashboard,
        }
        return {name: cache for name, cache in caches.items() if cache is not None}
