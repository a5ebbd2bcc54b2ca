"""Run the sample API for an experiment: Redis, a seeded database and uvicorn on free ports.

Tests, Locust runs and reports need the real app over real HTTP, started and
stopped by code. :class:`AppServer` launches (or uses) Redis, creates and seeds
a database (SQLite in a temporary directory unless ``database_url`` is given),
starts uvicorn in a subprocess on a free loopback port, waits for
``/api/health``, optionally starts report workers, and stops everything it
started on exit.

Every seeded user's password is :attr:`AppServer.seed_password` (random per
server unless given); log in with :mod:`cachelab.harness.app_client`, and a
Locust run against :attr:`base_url` finds it (and the tenant count) through
:meth:`AppServer.serving`. uvicorn runs with proxy headers off, as under
``cachelab serve``; ``X-Forwarded-For`` counts only from ``trusted_proxies``
(``CACHELAB_TRUSTED_PROXIES``). The app's own default trusts nobody; an
AppServer is launched for experiments whose load generator runs on this host
and stands in for many clients, so it trusts 127.0.0.1 unless told otherwise
(``trusted_proxies=""`` to trust nobody, as a test of the limits does).

``python`` runs another checkout's app (``cachelab report --against``): its
interpreter and environment (``env``, e.g. its ``PYTHONPATH``) start uvicorn,
the job workers and the seeding, so the code measured is that checkout's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path

import httpx

from cachelab.servers.children import spawn
from cachelab.servers.redis_server import HOST, RedisServer, RedisServerConfig, find_redis_server, free_port

_serving: weakref.WeakValueDictionary[str, AppServer] = weakref.WeakValueDictionary()


class AppServerFailed(RuntimeError):
    pass


class AppServer:
    def __init__(
        self,
        *,
        redis_url: str | None = None,
        redis_config: RedisServerConfig | None = None,
        database_url: str | None = None,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
        job_workers: int = 0,
        job_worker_args: tuple[str, ...] = (),
        tenants: int = 3,
        initiatives_per_tenant: int = 500,
        port: int | None = None,
        startup_timeout: float = 30.0,
        seed_password: str | None = None,
        trusted_proxies: str = "127.0.0.1",
        python: str | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.redis_config = redis_config
        self.database_url = database_url
        self.extra_env = dict(env or {})
        self.workers = workers
        self.job_workers = job_workers
        self.job_worker_args = job_worker_args
        self.tenants = tenants
        self.initiatives_per_tenant = initiatives_per_tenant
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.seed_password = seed_password or secrets.token_urlsafe(18)
        self.extra_env.setdefault("CACHELAB_TRUSTED_PROXIES", trusted_proxies)
        self.python = python or sys.executable
        self.redis: RedisServer | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._job_procs: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """The uvicorn process (with ``workers > 1``, its workers are its children)."""
        if not self._procs:
            raise RuntimeError("the app is not running")
        return self._procs[0].pid

    def accounts(self) -> list[dict[str, str]]:
        """The seeded users (tenant, e-mail, role) of this server's seed sizes; no HTTP needed."""
        from cachelab.app.seed import seed_accounts

        return seed_accounts(self.tenants)

    def _server_binary(self) -> str:
        """The server this app's ``env`` asks for, as its own process would pick it: a report
        measures one side on Redis and the other on Valkey."""
        return find_redis_server(env={**os.environ, **self.extra_env})

    def start(self) -> AppServer:
        from cachelab.app.serve import prepare_database

        try:
            self._tmp = tempfile.TemporaryDirectory(prefix="cachelab-app-")
            if self.redis_url is None:
                self.redis = RedisServer(self.redis_config, binary=self._server_binary()).start()
                self.redis_url = self.redis.url
            if self.database_url is None:
                self.database_url = f"sqlite:///{Path(self._tmp.name) / 'dashboard.db'}"
            self.env = {
                **os.environ,
                "REDIS_URL": self.redis_url,
                "DATABASE_URL": self.database_url,
                **self.extra_env,
            }
            if self.python == sys.executable:
                asyncio.run(
                    prepare_database(
                        self.database_url,
                        tenants=self.tenants,
                        per_tenant=self.initiatives_per_tenant,
                        reset=False,
                        only_if_empty=True,
                        password=self.seed_password,
                    )
                )
            else:
                self._seed_with_own_python()
            self._log = open(Path(self._tmp.name) / "uvicorn.log", "wb")  # noqa: SIM115
            self._procs.append(
                spawn(
                    [
                        self.python,
                        "-m",
                        "uvicorn",
                        "cachelab.app.main:create_app",
                        "--factory",
                        "--host",
                        HOST,
                        "--port",
                        str(self.port),
                        "--workers",
                        str(self.workers),
                        "--log-level",
                        "warning",
                        "--no-access-log",
                        "--no-proxy-headers",
                    ],
                    env=self.env,
                    stdout=self._log,
                    stderr=subprocess.STDOUT,
                    cwd=self._tmp.name,
                )
            )
            for _ in range(self.job_workers):
                self.start_job_worker(*self.job_worker_args)
            self._wait_healthy()
            _serving[self.base_url] = self
        except BaseException:
            self.stop()
            raise
        return self

    def _seed_with_own_python(self) -> None:
        cmd = [self.python, "-m", "cachelab", "seed-db", "--tenants", str(self.tenants),
               "--initiatives-per-tenant", str(self.initiatives_per_tenant)]
        # That checkout's seed-db sets this password if it knows passwords (older ones ignore it).
        env = {**self.env, "CACHELAB_SEED_PASSWORD": self.seed_password}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            output = (proc.stderr or proc.stdout)[-2000:]
            raise AppServerFailed(f"seeding with {self.python} failed: {output}")

    def start_job_worker(self, *extra_args: str) -> subprocess.Popen[bytes]:
        from cachelab.app.jobs import worker_command

        proc = spawn(
            [self.python, *worker_command(*extra_args)[1:]],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._job_procs.append(proc)
        return proc

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._procs[0].poll() is not None:
                    raise AppServerFailed(f"uvicorn exited early:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.base_url}/api/health").status_code == 200:
                        return
                time.sleep(0.1)
        raise AppServerFailed(f"app did not become healthy in {self.startup_timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self._tmp is None:
            return ""
        path = Path(self._tmp.name) / "uvicorn.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @staticmethod
    def serving(base_url: str) -> AppServer | None:
        """The running AppServer of this process at ``base_url``, if any (for its password and sizes)."""
        return _serving.get(base_url.rstrip("/"))

    def stop(self) -> None:
        _serving.pop(self.base_url, None)
        for proc in [*self._job_procs, *self._procs]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self._job_procs, *self._procs]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()
        self._job_procs.clear()
        if getattr(self, "_log", None) is not None:
            self._log.close()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
