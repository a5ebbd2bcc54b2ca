"""Launch a throwaway PostgreSQL on a free loopback port, and always remove it.

Why: the app's PostgreSQL path (asyncpg, RETURNING, int4 ids, concurrency)
deserves the same real-server tests as SQLite, without asking the user for a
database we might damage. :class:`PostgresServer` runs ``initdb`` into a
temporary directory, starts it with ``pg_ctl`` on 127.0.0.1 (unix socket in
that directory, fsync off — the data is disposable), creates one database,
and on exit stops the server and deletes the directory, even after a crash
of the caller (``atexit``).

``initdb`` and ``pg_ctl`` refuse to run as root. When we are root, they run
as the ``postgres`` user (or ``nobody``) through ``runuser``/``su``, and the
temporary directory is handed to that user.

Binaries come from ``$CACHELAB_PG_BIN`` (a directory), ``PATH``, or the usual
install locations (``/usr/lib/postgresql/<version>/bin``, Homebrew, EDB).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import weakref
from pathlib import Path

from cachelab.servers.redis_server import HOST, free_port

_live: weakref.WeakSet[PostgresServer] = weakref.WeakSet()
_SEARCH = (
    "/usr/lib/postgresql/*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/local/opt/postgresql*/bin",
    "/Library/PostgreSQL/*/bin",
)
_RUN_AS_CANDIDATES = ("postgres", "nobody")


class PostgresNotFound(RuntimeError):
    """No usable initdb/pg_ctl; the message says how to get them."""


class PostgresFailed(RuntimeError):
    """initdb, pg_ctl or createdb failed; the message carries the server log's tail."""


def _version_key(path: str) -> tuple[int, ...]:
    digits = [int(p) for p in Path(path).parent.name.split(".") if p.isdigit()]
    return tuple(digits) or (0,)


def find_pg_bindir(explicit: str | None = None) -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (newest version wins), or :class:`PostgresNotFound`."""
    def usable(d: Path) -> bool:
        return all(os.access(d / b, os.X_OK) for b in ("initdb", "pg_ctl"))

    for candidate in (explicit, os.environ.get("CACHELAB_PG_BIN")):
        if candidate:
            if usable(Path(candidate)):
                return Path(candidate)
            raise PostgresNotFound(f"no initdb/pg_ctl in {candidate!r}")
    on_path = shutil.which("initdb")
    if on_path and usable(Path(on_path).resolve().parent):
        return Path(on_path).resolve().parent
    for pattern in _SEARCH:
        for d in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            if usable(Path(d)):
                return Path(d)
    raise PostgresNotFound(
        "no PostgreSQL server binaries (initdb, pg_ctl) found. Install one of:\n"
        "  Debian/Ubuntu:  sudo apt-get install -y postgresql\n"
        "  macOS:          brew install postgresql\n"
        "or set CACHELAB_PG_BIN to the directory holding initdb, or point DATABASE_URL at a server."
    )


def _run_as_user() -> str | None:
    """None when we may run PostgreSQL ourselves; else the unprivileged user to run it as."""
    if os.geteuid() != 0:
        return None
    for name in _RUN_AS_CANDIDATES:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresNotFound("running as root, and no 'postgres' or 'nobody' user exists to run initdb as")


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *argv]
    if shutil.which("su"):
        return ["su", "-s", "/bin/sh", user, "-c", shlex.join(argv)]
    raise PostgresNotFound("running as root but neither runuser nor su is available to drop privileges")


class PostgresServer:
    """A PostgreSQL server owned by this process; ``with PostgresServer() as pg: pg.url``."""

    def __init__(
        self,
        *,
        bindir: str | None = None,
        database: str = "cachelab",
        port: int | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.bindir = find_pg_bindir(bindir)
        self.database = database
        self.port = port
        self.startup_timeout = startup_timeout
        self.user = "postgres"  # the superuser initdb creates (trust auth on loopback only)
        self._run_as = _run_as_user()
        self.tmpdir: Path | None = None
        self.url = ""

    # -- helpers ---------------------------------------------------------------
    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def _call(self, argv: list[str], what: str, timeout: float) -> None:
        proc = subprocess.run(
            _as_user(self._run_as, argv), capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"}, cwd=str(self.tmpdir) if self.tmpdir else None,
            check=False,
        )
        if proc.returncode != 0:
            detail = proc.stderr.strip()[-1500:]
            raise PostgresFailed(f"{what} failed ({proc.returncode}): {detail}{self._log_tail()}")

    def _log_tail(self) -> str:
        log = self.tmpdir / "server.log" if self.tmpdir else None
        if log and log.exists():
            return "\nserver log:\n" + log.read_text(errors="replace")[-1500:]
        return ""

    @property
    def data_dir(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "data"

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> PostgresServer:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="cachelab-pg-"))
        _live.add(self)
        try:
            if self._run_as is not None:
                entry = pwd.getpwnam(self._run_as)
                os.chown(self.tmpdir, entry.pw_uid, entry.pw_gid)
            self._call(
                [self._bin("initdb"), "-D", str(self.data_dir), "-U", self.user, "--auth=trust",
                 "--encoding=UTF8", "--no-locale", "--no-sync"],
                "initdb", timeout=120,
            )
            self._start_server()
            self._call(
                [self._bin("createdb"), "-h", HOST, "-p", str(self.port), "-U", self.user, self.database]
                if (self.bindir / "createdb").exists()
                else [self._bin("psql"), "-h", HOST, "-p", str(self.port), "-U", self.user, "-d", "postgres",
                      "-c", f'CREATE DATABASE "{self.database}"'],
                "createdb", timeout=30,
            )
        except BaseException:
            self.stop()
            raise
        self.url = f"postgresql://{self.user}@{HOST}:{self.port}/{self.database}"
        return self

    def _start_server(self) -> None:
        fixed = self.port is not None
        for attempt in range(3):
            if not fixed:
                self.port = free_port()
            options = " ".join([
                f"-h {HOST}", f"-p {self.port}", f"-k {shlex.quote(str(self.tmpdir))}",
                "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
                "-c max_connections=100",
            ])
            try:
                self._call(
                    [self._bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.tmpdir / "server.log"),
                     "-w", "-t", str(int(self.startup_timeout)), "-o", options, "start"],
                    "pg_ctl start", timeout=self.startup_timeout + 10,
                )
                return
            except PostgresFailed:
                if fixed or attempt == 2:  # another process may have taken the free port: try another
                    raise

    def stop(self) -> None:
        """Stop the server (fast, then immediate) and delete its directory; safe to call twice."""
        if self.tmpdir is None:
            return
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            for mode in ("fast", "immediate"):
                try:
                    argv = [self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "20"]
                    argv.append("stop")
                    self._call(argv, f"pg_ctl stop -m {mode}", timeout=30)
                    break
                except (PostgresFailed, subprocess.TimeoutExpired):
                    continue
            else:  # pg_ctl could not stop it: kill the postmaster we started, by its pid
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = None
        _live.discard(self)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop()
