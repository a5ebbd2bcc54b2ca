"""docker-compose.yml, Dockerfile and .dockerignore, checked without a Docker engine.

No Docker runs on CI machines here, so the compose file is parsed with PyYAML,
its ``${VAR:-default}`` interpolation is resolved the way Compose does, and
the result is held to what the topology promises: pinned images, a
healthcheck on every service, dependents that wait for health, the cache
Redis evicting and the queue Redis never evicting, URLs that cachelab's own
validators accept, commands that cachelab's own CLI parser accepts, Locust
workers that can be scaled, loopback-only ports and no secrets.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from cachelab.cli import build_parser
from cachelab.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"redis", "redis-queue", "postgres", "api", "worker", "locust-master", "locust-worker"}
CACHELAB_SERVICES = {"api", "worker", "locust-master", "locust-worker"}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)((?:[^{}]|\{[^{}]*\}|\$\{[^{}]*\})*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ``${VAR}``, ``${VAR:-default}`` (unset or empty), ``${VAR-default}``
    (unset), defaults that are themselves interpolated, and ``$$`` for a literal ``$``."""

    def one(match: re.Match[str]) -> str:
        name, op, default = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if op == ":-" and not value:
            return interpolate(default, env)
        if op == "-" and value is None:
            return interpolate(default, env)
        return value or ""

    parts = text.split("$$")
    return "$".join(_VAR.sub(one, part) for part in parts)


def resolve(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(v, env) for v in node]
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    return node


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Compose would see it with ``env`` as the environment / .env."""
    return resolve(yaml.safe_load(COMPOSE.read_text()), env or {})


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_interpolation_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}|${EMPTY:-d}|${EMPTY-d}|${UNSET-d}|${UNSET}", env) == "x|d||d|"
    assert interpolate("a${UNSET:-${SET}-${UNSET:-z}}b", env) == "ax-zb"
    assert interpolate("$${POSTGRES_USER}", env) == "${POSTGRES_USER}"


def test_every_variable_has_a_default_so_compose_up_needs_no_env_file():
    text = COMPOSE.read_text().replace("$$", "")
    bare = [m.group(0) for m in _VAR.finditer(text) if m.group(2) is None]
    assert bare == []
    resolved = compose()
    check = resolved["services"]["postgres"].pop("healthcheck")
    assert "${" not in str(resolved)  # everything resolved...
    assert '"${POSTGRES_USER}"' in check["test"][1]  # ...but $$-escaped ones, left to the container's shell


def test_topology_has_every_service_with_pinned_images_and_one_built_cachelab_image():
    doc = compose()
    services = doc["services"]
    assert set(services) == SERVICES
    assert re.fullmatch(r"redis:7\.\d+\.\d+(-alpine)?", services["redis"]["image"])
    assert services["redis-queue"]["image"] == services["redis"]["image"]
    assert re.fullmatch(r"postgres:16\.\d+(-alpine)?", services["postgres"]["image"])
    images = {services[name]["image"] for name in CACHELAB_SERVICES}
    assert images == {"cachelab:local"}
    for name in CACHELAB_SERVICES:
        assert services[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert not any(str(s.get("image", "")).endswith(":latest") for s in services.values())
    assert set(doc["volumes"]) >= {"redis-data", "redis-queue-data", "postgres-data"}


def test_every_service_has_a_healthcheck_and_dependents_wait_for_health():
    services = compose()["services"]
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    waits = {
        name: {dep: c["condition"] for dep, c in s.get("depends_on", {}).items()}
        for name, s in services.items()
    }
    assert waits["api"] == {
        "redis": "service_healthy",
        "redis-queue": "service_healthy",
        "postgres": "service_healthy",
    }
    assert waits["worker"]["api"] == "service_healthy"  # the API creates and seeds the schema
    assert waits["locust-master"] == {"api": "service_healthy"}
    assert waits["locust-worker"] == {"locust-master": "service_healthy"}
    for deps in waits.values():
        assert set(deps) <= SERVICES


def _redis_config(service: dict[str, Any]) -> dict[str, str]:
    args = command(service)
    assert args[0] == "redis-server"
    return {args[i].removeprefix("--"): args[i + 1] for i in range(1, len(args), 2)}


def test_cache_redis_is_aof_allkeys_lru_and_queue_redis_never_evicts():
    services = compose({"REDIS_MAXMEMORY_POLICY": "volatile-lru"})["services"]
    assert _redis_config(services["redis"])["maxmemory-policy"] == "volatile-lru"  # tunable from .env
    services = compose()["services"]
    cache, queue = _redis_config(services["redis"]), _redis_config(services["redis-queue"])
    assert cache["appendonly"] == "yes" and cache["maxmemory-policy"] == "allkeys-lru"
    assert re.fullmatch(r"\d+[kmg]b", cache["maxmemory"])
    assert queue["appendonly"] == "yes" and queue["maxmemory-policy"] == "noeviction"
    assert "${" not in yaml.safe_load(COMPOSE.read_text())["services"]["redis-queue"]["command"][-1]


def test_queue_and_sessions_live_on_the_noeviction_redis_and_the_worker_needs_no_override():
    services = compose()["services"]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert urllib.parse.urlparse(env["REDIS_URL"]).hostname == "redis"
        assert urllib.parse.urlparse(env["QUEUE_REDIS_URL"]).hostname == "redis-queue"
    assert _redis_config(services["redis-queue"])["maxmemory-policy"] == "noeviction"
    # The worker's eviction check passes on redis-queue as is: no --allow-evicting-redis.
    assert "--allow-evicting-redis" not in command(services["worker"])
    assert services["worker"]["depends_on"]["redis-queue"]["condition"] == "service_healthy"


@pytest.mark.parametrize("env", [{}, {"POSTGRES_USER": "u1", "POSTGRES_PASSWORD": "p1", "POSTGRES_DB": "d1"}])
def test_app_urls_come_from_env_and_agree_with_the_postgres_service(env):
    services = compose(env)["services"]
    pg = services["postgres"]["environment"]
    for name in ("api", "worker"):
        app_env = services[name]["environment"]
        settings = load_settings(redis_url=app_env["REDIS_URL"], database_url=app_env["DATABASE_URL"])
        db = urllib.parse.urlparse(settings.database_url)
        assert db.scheme == "postgresql" and db.hostname == "postgres" and db.port == 5432
        assert (db.username, db.password, db.path.lstrip("/")) == (
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
            pg["POSTGRES_DB"],
        )
        assert urllib.parse.urlparse(settings.redis_url).hostname == "redis"
    overridden = compose({"REDIS_URL": "rediss://app:pw@cache.example:6380/0"})["services"]
    assert overridden["api"]["environment"]["REDIS_URL"] == "rediss://app:pw@cache.example:6380/0"


def test_api_and_worker_commands_are_accepted_by_the_cachelab_cli():
    services = compose({"API_WORKERS": "4"})["services"]
    parser = build_parser()
    api = command(services["api"])
    assert api[0] == "cachelab"
    serve = parser.parse_args(api[1:])
    assert (serve.command, serve.host, serve.port, serve.workers, serve.job_workers) == (
        "serve",
        "0.0.0.0",
        8000,
        4,
        0,
    )
    worker = command(services["worker"])
    assert worker[0] == "cachelab"
    args = parser.parse_args(worker[1:])
    assert args.command == "worker" and args.handlers == ["cachelab.app.jobs:HANDLERS"]
    from cachelab.app.jobs import HANDLERS
    from cachelab.app.state import REPORT_QUEUE

    assert args.queue == REPORT_QUEUE and HANDLERS
    assert services["worker"]["stop_grace_period"] == "10s" and args.grace_period < 10
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]


def test_locust_master_and_scalable_workers_are_wired_to_each_other_and_the_api():
    services = compose({"LOCUST_MASTER_ARGS": "--headless -u 200 -r 20 -t 5m --expect-workers 4"})["services"]
    master, worker = command(services["locust-master"]), command(services["locust-worker"])
    assert master[0] == worker[0] == "locust"
    assert flag(master, "-f") == flag(worker, "-f") == "locustfiles/dashboard.py"
    assert (ROOT / "locustfiles" / "dashboard.py").is_file()
    assert "--master" in master and flag(master, "--host") == "http://api:8000"
    assert master[-9:] == ["--headless", "-u", "200", "-r", "20", "-t", "5m", "--expect-workers", "4"]
    assert flag(master, "--results-dir") == "/results"
    assert "--worker" in worker and flag(worker, "--master-host") == "locust-master"
    assert flag(worker, "--master-port") == "5557"
    assert [p.rsplit(":", 1)[1] for p in services["locust-master"]["ports"]] == ["8089", "5557"]
    # `docker compose up --scale locust-worker=N` needs no fixed name and no published port.
    assert "container_name" not in services["locust-worker"] and "ports" not in services["locust-worker"]
    assert not any("container_name" in s for s in services.values())
    assert "--headless" not in command(compose()["services"]["locust-master"])  # web UI by default


def test_published_ports_bind_loopback_by_default_and_no_secret_is_committed():
    services = compose()["services"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)
    raw = yaml.safe_load(COMPOSE.read_text())
    postgres_env = raw["services"]["postgres"]["environment"]
    assert postgres_env["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-change-me}"
    # Credentials only ever come from the environment; the one default is an obvious placeholder, or
    # nothing at all (the seed password is then generated into a volume, see below). A *_FILE names
    # where a secret is kept, never the secret.
    for name, service in raw["services"].items():
        environment = dict(service.get("environment") or {})
        environment.pop("<<", None)
        environment |= raw["x-seed-password-env"] if name in {"api", "locust-master", "locust-worker"} else {}
        for key, value in environment.items():
            if key.endswith("_FILE"):
                assert value.startswith("/run/"), (name, key, value)
            elif re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:-change-me|:-)?\}", value), (name, key, value)

    def url_passwords(doc: Any) -> set[str]:
        urls = re.findall(r"[a-z+]+://\S+", str(doc))
        return {urllib.parse.urlparse(u.rstrip("',")).password for u in urls} - {None}

    assert url_passwords(compose()) == {"change-me"}
    assert url_passwords(compose({"POSTGRES_PASSWORD": "from-dot-env"})) == {"from-dot-env"}


def test_dockerfile_builds_one_non_root_image_without_local_config():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert 'pip install ".[load,postgres]"' in dockerfile
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.M)
    for path in ("pyproject.toml", "README.md", "src", "locustfiles"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", dockerfile, re.M), path
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".git", "results", "tests"} <= ignored
    assert not ignored & {"src", "locustfiles", "pyproject.toml", "README.md"}


def test_the_seed_password_is_generated_into_a_volume_the_api_writes_and_locust_reads(tmp_path, monkeypatch):
    from cachelab.app.seed_password import resolve_seed_password, seed_password_for_client

    services = compose()["services"]
    assert "seed-secret:/run/cachelab" in services["api"]["volumes"]
    for name in ("locust-master", "locust-worker"):
        assert "seed-secret:/run/cachelab:ro" in services[name]["volumes"], name
    assert "seed-secret" in yaml.safe_load(COMPOSE.read_text())["volumes"]
    assert "seed-secret" not in str(services["worker"].get("volumes"))  # jobs need no password
    api_env, locust_env = services["api"]["environment"], services["locust-worker"]["environment"]
    assert api_env["CACHELAB_SEED_PASSWORD"] == ""
    assert api_env["CACHELAB_SEED_PASSWORD_FILE"] == locust_env["CACHELAB_SEED_PASSWORD_FILE"]
    from_dot_env = compose({"CACHELAB_SEED_PASSWORD": "from .env"})["services"]
    assert from_dot_env["api"]["environment"]["CACHELAB_SEED_PASSWORD"] == "from .env"
    # What the containers' cachelab does with that environment: the API, bound to 0.0.0.0, may
    # start because the operator named a file; Locust reads the same file.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CACHELAB_SEED_PASSWORD", api_env["CACHELAB_SEED_PASSWORD"])
    monkeypatch.setenv("CACHELAB_SEED_PASSWORD_FILE", str(tmp_path / "run" / "seed-password"))
    password, _ = resolve_seed_password(flag(command(services["api"]), "--host"))
    assert seed_password_for_client() == password
    # Locust logs in as the users of as many tenants as the API seeded.
    seven = compose({"SEED_TENANTS": "7"})["services"]
    tenants = {flag(command(seven[name]), "--tenants") for name in ("api", "locust-master")}
    assert tenants == {"7"}
    assert "/run/cachelab" in (ROOT / "Dockerfile").read_text()
