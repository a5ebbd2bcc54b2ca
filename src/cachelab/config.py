"""Configuration from the environment (and a ``.env`` file).

One validated object, so a malformed value fails at start-up with a message
naming the variable, instead of surfacing later as a confusing runtime error.
``REDIS_URL`` and ``DATABASE_URL`` are read without the ``CACHELAB_`` prefix
because those are the names users already have.

Settings sit above the client and the patterns: they validate values with the
parsers those layers own (Redis URLs, rate limits) and build a client from
themselves (:meth:`Settings.redis_client`); the client knows nothing of them.
"""

from __future__ import annotations

import ipaddress
import textwrap
import urllib.parse
from functools import lru_cache
from typing import Any, Literal, get_args, get_origin

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cachelab.client import ClientOptions, ResilientRedis, is_cluster_url, validate_redis_url
from cachelab.errors import ConfigError
from cachelab.patterns.ratelimit import algorithm_name, parse_limit
from cachelab.resilience import CircuitBreaker

CacheMode = Literal["off", "cache-aside", "refresh-ahead", "swr", "xfetch", "lock"]
QueueBackend = Literal["list", "streams"]
FailurePolicy = Literal["open", "closed", "local"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``CACHELAB_TRUSTED_PROXIES``: ``"127.0.0.1, 10.0.0.0/8"`` → networks; ValueError naming a bad entry."""
    networks = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(
                f"CACHELAB_TRUSTED_PROXIES entry {part!r} is not an IP address or CIDR network"
            ) from None
    return tuple(networks)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CACHELAB_", env_file=".env", extra="ignore", populate_by_name=True
    )

    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "CACHELAB_REDIS_URL"),
        description="the Redis (redis://, rediss://, redis+cluster://; user:password@ allowed); "
        "unset: serve launches a private redis-server",
    )
    # Queue and sessions must never be evicted; with an allkeys-* cache Redis, give them their own
    # noeviction Redis here (default: the same as REDIS_URL).
    queue_redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("QUEUE_REDIS_URL", "CACHELAB_QUEUE_REDIS_URL"),
        description="a noeviction Redis for the job queue and sessions (default: REDIS_URL)",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "CACHELAB_DATABASE_URL"),
        description="sqlite:///path.db or postgresql://user:pass@host:5432/db (default: ./cachelab.db)",
    )

    # client
    redis_connect_timeout: float = Field(1.0, gt=0, description="seconds to connect to Redis")
    redis_command_timeout: float = Field(0.5, gt=0, description="seconds for one Redis command")
    redis_retries: int = Field(
        1, ge=0, le=10, description="retries (with backoff) of a command whose connection was lost or refused"
    )
    redis_max_connections: int = Field(100, ge=1, description="connection pool size per process")

    # circuit breaker
    breaker_enabled: bool = Field(True, description="circuit breaker in front of Redis")
    breaker_failure_threshold: int = Field(3, ge=1, description="consecutive failures that open it")
    breaker_reset_timeout: float = Field(1.0, gt=0, description="seconds open before a half-open probe")
    background_max: int = Field(256, ge=1, description="bounded background cache writes in flight")

    # app behaviour
    cache_mode: CacheMode = Field("cache-aside", description="how the app caches reads")
    kpi_ttl: float = Field(300, ge=0, description="seconds a tenant's KPIs stay cached")
    areas_ttl: float = Field(600, ge=0, description="seconds the areas list stays cached")
    list_ttl: float = Field(60, ge=0, description="seconds an initiatives page stays cached")
    dashboard_soft_ttl: float = Field(60, ge=0, description="seconds before a dashboard is served stale")
    dashboard_ttl: float = Field(600, ge=0, description="seconds before a dashboard expires")
    ttl_jitter: float = Field(0.1, ge=0, le=0.5, description="random fraction added to TTLs")
    rate_limit: str = Field("1000/60s", description="per-client limit on /api/*, '<requests>/<seconds>s'")
    rate_limit_algorithm: str = Field(
        "gcra",
        description="fixed_window, sliding_log, sliding_window, token_bucket or gcra",
    )
    rate_limit_failure: FailurePolicy = Field(
        "local", description="with Redis down: admit, refuse, or limit in process"
    )
    queue_backend: QueueBackend = Field(
        "list",
        description="the job queue the app and `cachelab worker` use: list (sorted sets + Lua) or "
        "streams (a Redis Streams consumer group; Redis >= 6.2); drain the queue before switching",
    )
    tenant_concurrency: int = Field(
        4, ge=1, le=10_000,
        description="requests in flight per tenant on the slow endpoints (report requests, "
        "initiative exports); more get 429",
    )
    db_delay_ms: float = Field(0, ge=0, description="added delay per query, to model a remote database")
    cost_header: bool = Field(
        False, description="X-Request-Cost on every response (Redis round trips/commands, SQL): load tests"
    )
    max_value_bytes: int = Field(1_000_000, ge=1, description="largest value the cache stores")
    # near cache (cachelab.patterns.near_cache): an in-process L1 for the hot caches, off by default
    near_cache: bool = Field(
        False,
        description="'on': keep KPIs, areas, tenants, users and dashboards in process too, invalidated "
        "by Redis (CLIENT TRACKING); X-Cache: HIT-L1",
    )
    near_cache_max_age: float = Field(
        10.0, gt=0, description="seconds an in-process entry may be served after its read, even unnotified"
    )
    near_cache_max_bytes: int = Field(16 * 2**20, ge=4096, description="in-process cache budget per process")
    # fast reads (cachelab.app.fast_reads): warm near-cached reads answered without Redis, off by default
    fast_reads: bool = Field(
        False,
        description="'on' (needs CACHELAB_NEAR_CACHE=on): trust a session read in the last "
        "CACHELAB_SESSION_TRUST seconds, lease rate-limit units, and answer a warm near-cached "
        "read with neither a Redis round trip nor FastAPI's dependency resolution",
    )
    session_trust: float = Field(
        1.0, gt=0, le=60,
        description="with fast reads: seconds a session read from Redis is trusted in process "
        "(a log-out in another process takes effect within this)",
    )

    # authentication (see cachelab.app.auth)
    trusted_proxies: str = Field(
        "", description="peers whose X-Forwarded-For is believed (comma-separated IPs or CIDRs; empty: none)"
    )
    # Login attempts, GCRA: a burst of <count>, then <count> per period, whether they succeed or not.
    login_rate_limit_ip: str = Field("30/60s", description="login attempts per client address")
    login_rate_limit_account: str = Field("10/5m", description="login attempts per account (e-mail)")
    seed_password: SecretStr | None = Field(
        None,
        description="the seeded users' password (serve, seed-db); unset: a random one, kept in a 0600 "
        "file on a loopback bind",
    )
    seed_password_file: str | None = Field(None, description="a file holding the seeded users' password")

    @field_validator("redis_url", "queue_redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == "":
            return None
        try:
            validate_redis_url(value)
        except ConfigError as exc:  # its message says REDIS_URL; this may be QUEUE_REDIS_URL
            raise ValueError(str(exc).replace("REDIS_URL", env_var(info.field_name or ""), 1)) from None
        return value

    @property
    def durable_redis_url(self) -> str | None:
        """Where the queue and sessions live: ``QUEUE_REDIS_URL``, else ``REDIS_URL``."""
        return self.queue_redis_url or self.redis_url

    def client_options(self) -> ClientOptions:
        """The client's pool size, timeouts and retries from ``CACHELAB_REDIS_*``."""
        return ClientOptions(
            connect_timeout=self.redis_connect_timeout,
            command_timeout=self.redis_command_timeout,
            retries=self.redis_retries,
            max_connections=self.redis_max_connections,
        )

    def redis_client(self, url: str | None = None) -> ResilientRedis:
        """A :class:`ResilientRedis` for ``url`` (default ``REDIS_URL``) configured by these settings.

        Raises :class:`ConfigError` when there is no URL at all.
        """
        url = url or self.redis_url
        if not url:
            raise ConfigError("no Redis URL: set REDIS_URL or launch a server first")
        breaker = CircuitBreaker(
            failure_threshold=self.breaker_failure_threshold,
            reset_timeout=self.breaker_reset_timeout,
            enabled=self.breaker_enabled,
        )
        return ResilientRedis.from_url(
            url, options=self.client_options(), breaker=breaker, background_max=self.background_max
        )

    @field_validator("near_cache")
    @classmethod
    def _check_near_cache(cls, value: bool, info: ValidationInfo) -> bool:
        url = info.data.get("redis_url")
        if value and url and is_cluster_url(url):
            raise ValueError(
                "CACHELAB_NEAR_CACHE=on does not work with Redis Cluster (REDIS_URL is redis+cluster://): "
                "tracking would need one invalidation connection per primary"
            )
        return value

    @field_validator("fast_reads")
    @classmethod
    def _check_fast_reads(cls, value: bool, info: ValidationInfo) -> bool:
        if value and not info.data.get("near_cache"):
            raise ValueError(
                "CACHELAB_FAST_READS=on needs CACHELAB_NEAR_CACHE=on: fast reads are answered from the "
                "in-process cache"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("seed_password", "seed_password_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("rate_limit", "login_rate_limit_ip", "login_rate_limit_account")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        parse_limit(value)
        return value

    @field_validator("queue_backend", mode="before")
    @classmethod
    def _check_queue_backend(cls, value: object) -> object:
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in get_args(QueueBackend):
            raise ValueError(
                f"CACHELAB_QUEUE_BACKEND must be 'list' (sorted sets + Lua, the default) or 'streams' "
                f"(a Redis Streams consumer group, Redis >= 6.2), got {value!r}"
            )
        return text

    @field_validator("rate_limit_algorithm")
    @classmethod
    def _check_algorithm(cls, value: str) -> str:
        return algorithm_name(value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; a bad value raises :class:`ConfigError` with the variable's name."""
    return load_settings()


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise ConfigError(f"invalid cachelab configuration: {problems}") from None


def env_var(field: str) -> str:
    """The environment variable a :class:`Settings` field is read from (what users set)."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def _describe(err: Any) -> str:
    """One validation error as ``VARIABLE='value': reason``, on one line, passwords redacted.

    Pydantic names the field (``kpi_ttl``); users set the variable (``CACHELAB_KPI_TTL``).
    """
    loc = str(err["loc"][0]) if err["loc"] else ""
    name = env_var(loc) if loc in Settings.model_fields else loc.upper() or "value"
    reason = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    text = reason if reason.startswith(name) else f"{name}: {reason}"
    if isinstance(value, str | int | float | bool):
        shown = repr(_redact(str(value)) if isinstance(value, str) else value)
        if shown not in reason:
            text = f"{name}={shown}: {reason}"
    return " ".join(text.split())


def _redact(value: str) -> str:
    """A URL's password replaced (the same rule as the client's logs)."""
    parsed = urllib.parse.urlsplit(value) if "://" in value else None
    if parsed is None or not parsed.password:
        return value
    return value.replace(f":{parsed.password}@", ":***@", 1)


def settings_help(width: int = 100) -> str:
    """Every setting as ``VARIABLE  meaning (default ...)``: generated, so ``--help`` cannot drift."""
    lines = []
    for field, info in Settings.model_fields.items():
        default = info.get_default()
        choices = get_args(info.annotation) if get_origin(info.annotation) is Literal else ()
        details = [info.description or ""]
        if choices:
            details.append("one of " + ", ".join(choices))
        if default is not None and default != "":
            details.append(f"default {default}")
        name = f"  {env_var(field):<34} "
        text = "; ".join(d for d in details if d)
        lines.append(textwrap.fill(text, width, initial_indent=name, subsequent_indent=" " * len(name),
                                   break_on_hyphens=False))
    return "\n".join(lines)
