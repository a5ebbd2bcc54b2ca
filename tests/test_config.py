"""Settings errors name the variable a user sets, and `serve --help` lists every setting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cachelab.config import ConfigError, Settings, env_var, load_settings

BAD_VALUES = {
    "REDIS_URL": "http://cache.internal:6379/0",
    "QUEUE_REDIS_URL": "redis://:hunter2@host:notaport/0",
    "CACHELAB_REDIS_CONNECT_TIMEOUT": "0",
    "CACHELAB_REDIS_COMMAND_TIMEOUT": "soon",
    "CACHELAB_REDIS_RETRIES": "11",
    "CACHELAB_REDIS_MAX_CONNECTIONS": "0",
    "CACHELAB_BREAKER_ENABLED": "maybe",
    "CACHELAB_BREAKER_FAILURE_THRESHOLD": "0",
    "CACHELAB_BREAKER_RESET_TIMEOUT": "-1",
    "CACHELAB_BACKGROUND_MAX": "0",
    "CACHELAB_CACHE_MODE": "write-behind",
    "CACHELAB_KPI_TTL": "-1",
    "CACHELAB_AREAS_TTL": "-5",
    "CACHELAB_LIST_TTL": "a minute",
    "CACHELAB_DASHBOARD_SOFT_TTL": "-1",
    "CACHELAB_DASHBOARD_TTL": "-1",
    "CACHELAB_TTL_JITTER": "0.9",
    "CACHELAB_RATE_LIMIT": "lots",
    "CACHELAB_RATE_LIMIT_ALGORITHM": "leaky",
    "CACHELAB_RATE_LIMIT_FAILURE": "sometimes",
    "CACHELAB_DB_DELAY_MS": "-3",
    "CACHELAB_QUEUE_BACKEND": "kafka",
    "CACHELAB_TENANT_CONCURRENCY": "0",
    "CACHELAB_MAX_VALUE_BYTES": "0",
    "CACHELAB_NEAR_CACHE": "sometimes",
    "CACHELAB_NEAR_CACHE_MAX_AGE": "0",
    "CACHELAB_NEAR_CACHE_MAX_BYTES": "10",
    "CACHELAB_FAST_READS": "maybe",
    "CACHELAB_SESSION_TRUST": "3600",
    "CACHELAB_COST_HEADER": "sometimes",
    "CACHELAB_TRUSTED_PROXIES": "10.0.0.0/33",
    "CACHELAB_LOGIN_RATE_LIMIT_IP": "many",
    "CACHELAB_LOGIN_RATE_LIMIT_ACCOUNT": "10/0s",
}


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No cachelab variable and no .env from the developer's shell."""
    for field in Settings.model_fields:
        monkeypatch.delenv(env_var(field), raising=False)
        monkeypatch.delenv(f"CACHELAB_{field.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.mark.parametrize(("variable", "value"), sorted(BAD_VALUES.items()))
def test_a_bad_setting_is_named_by_its_environment_variable_and_value_on_one_line(
    clean_env, variable, value
):
    clean_env.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message and "\n" not in message
    field = next(f for f in Settings.model_fields if env_var(f) == variable)
    assert f"{field}:" not in message  # the variable, not pydantic's field name
    if "hunter2" in value:
        assert "hunter2" not in message
    else:
        assert value in message


def test_every_validated_setting_has_a_bad_value_case_here():
    # Any string: the database layer checks the URL when it connects; a password is any text; its
    # file is read (and checked) when the seed password is resolved.
    unvalidated = {"DATABASE_URL", "CACHELAB_SEED_PASSWORD", "CACHELAB_SEED_PASSWORD_FILE"}
    assert {env_var(f) for f in Settings.model_fields} - unvalidated == set(BAD_VALUES)


def test_serve_help_lists_every_setting_with_its_variable():
    text = subprocess.run(
        [sys.executable, "-m", "cachelab", "serve", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    missing = [env_var(f) for f in Settings.model_fields if env_var(f) not in text]
    assert missing == []
    assert "QUEUE_REDIS_URL" in text
