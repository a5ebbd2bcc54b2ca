"""Configuration from the environment (and a ``.env`` file).

One validated object, so a malformed value fails at start-up with a message
naming the variable, instead of surfacing later as a confusing runtime error.
``REDIS_URL`` and ``DATABASE_URL`` are read without the ``CACHELAB_`` prefix
because those are the names users already have.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CacheMode = Literal["off", "cache-aside", "refresh-ahead", "swr", "xfetch", "lock"]
FailurePolicy = Literal["open", "closed", "local"]


class ConfigError(ValueError):
    """The configuration is invalid; the message says which setting and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CACHELAB_", env_file=".env", extra="ignore", populate_by_name=True
    )

    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "CACHELAB_REDIS_URL")
    )
    # Queue and sessions must never be evicted; with an allkeys-* cache Redis, give them their own
    # noeviction Redis here (default: the same as REDIS_URL).
    queue_redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("QUEUE_REDIS_URL", "CACHELAB_QUEUE_REDIS_URL")
    )
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "CACHELAB_DATABASE_URL")
    )

    # client
    redis_connect_timeout: float = Field(1.0, gt=0)
    redis_command_timeout: float = Field(0.5, gt=0)
    redis_retries: int = Field(1, ge=0, le=10)
    redis_max_connections: int = Field(100, ge=1)

    # circuit breaker
    breaker_enabled: bool = True
    breaker_failure_threshold: int = Field(3, ge=1)
    breaker_reset_timeout: float = Field(1.0, gt=0)
    background_max: int = Field(256, ge=1)

    # app behaviour
    cache_mode: CacheMode = "cache-aside"
    kpi_ttl: float = Field(300, ge=0)
    areas_ttl: float = Field(600, ge=0)
    list_ttl: float = Field(60, ge=0)
    dashboard_soft_ttl: float = Field(60, ge=0)
    dashboard_ttl: float = Field(600, ge=0)
    ttl_jitter: float = Field(0.1, ge=0, le=0.5)
    rate_limit: str = "1000/60s"
    rate_limit_algorithm: str = "gcra"
    rate_limit_failure: FailurePolicy = "local"
    db_delay_ms: float = Field(0, ge=0)
    # X-Request-Cost on every response (Redis round trips/commands, SQL statements): load tests only.
    cost_header: bool = False
    max_value_bytes: int = Field(1_000_000, ge=1)

    # authentication (see cachelab.app.auth)
    # Peers whose X-Forwarded-For is believed (comma-separated IPs or CIDRs); empty: nobody's.
    trusted_proxies: str = ""
    # Login attempts, GCRA: a burst of <count>, then <count> per period. Per client address and
    # per account (e-mail), whether the attempt succeeds or not.
    login_rate_limit_ip: str = "30/60s"
    login_rate_limit_account: str = "10/5m"
    # The seeded users' password (cachelab serve / seed-db); see cachelab.app.seed_password.
    seed_password: SecretStr | None = None
    seed_password_file: str | None = None

    @field_validator("redis_url", "queue_redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        from cachelab.client import validate_redis_url

        validate_redis_url(value)
        return value

    @property
    def durable_redis_url(self) -> str | None:
        """Where the queue and sessions live: ``QUEUE_REDIS_URL``, else ``REDIS_URL``."""
        return self.queue_redis_url or self.redis_url

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        from cachelab.app.client_address import parse_networks

        parse_networks(value)
        return value

    @field_validator("seed_password", "seed_password_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("rate_limit", "login_rate_limit_ip", "login_rate_limit_account")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        from cachelab.patterns.ratelimit import parse_limit

        parse_limit(value)
        return value

    @field_validator("rate_limit_algorithm")
    @classmethod
    def _check_algorithm(cls, value: str) -> str:
        from cachelab.patterns.ratelimit import algorithm_name

        return algorithm_name(value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; a bad value raises :class:`ConfigError` with the variable's name."""
    return load_settings()


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid cachelab configuration: {problems}") from None
