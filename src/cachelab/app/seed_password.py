"""The seeded users' password: where ``serve``, ``seed-db`` and the load generator get it.

Every seeded user has the same password, so one well-known value would open
every account of a server anyone can reach. The rules:

1. ``CACHELAB_SEED_PASSWORD`` set (environment or ``.env``): that is the password.
2. ``CACHELAB_SEED_PASSWORD_FILE`` set: the password in that file, or, if the
   file does not exist, a new random one written there (mode 0600). An operator
   who names a file has chosen where the secret lives (docker-compose shares one
   between the API and the Locust containers this way).
3. Neither, and the server binds only to loopback: the same, with the default
   file ``$XDG_STATE_HOME/cachelab/seed-password`` (``~/.local/state/…``), which
   ``locust -f locustfiles/dashboard.py`` in another terminal reads too — the
   two-command quick start needs no setup, and the password is random per machine.
4. Neither, on any other bind: refused. A reachable server never gets a password
   nobody chose.

A generated password is printed once, when it is created. Loading never prints it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from cachelab.config import ConfigError, load_settings

ENV = "CACHELAB_SEED_PASSWORD"
FILE_ENV = "CACHELAB_SEED_PASSWORD_FILE"
MIN_LENGTH = 8


def default_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cachelab" / "seed-password"


def is_loopback(host: str | None) -> bool:
    """Is ``host`` a loopback bind (``127.0.0.1``, ``::1``, ``localhost``)? None means no bind at all."""
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _configured() -> tuple[str | None, Path | None]:
    settings = load_settings()
    password = settings.seed_password.get_secret_value() if settings.seed_password else None
    path = Path(settings.seed_password_file).expanduser() if settings.seed_password_file else None
    return password, path


def _read(path: Path) -> str:
    value = path.read_text().strip()
    if len(value) < MIN_LENGTH:
        raise ConfigError(f"{path} holds no usable seed password (fewer than {MIN_LENGTH} characters)")
    return value


def _create(path: Path) -> str:
    """A fresh random password in a new 0600 file (an existing file is never overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password


def resolve_seed_password(host: str | None) -> tuple[str, str]:
    """The password the seeded users get, and a line saying where it came from (never the password,
    except when it was just generated: that line is the one time it is shown).

    ``host`` is the address the server will bind (None for ``seed-db``, which binds nothing).
    Raises :class:`ConfigError` for a non-loopback bind with neither variable set.
    """
    password, path = _configured()
    if password is not None:
        if len(password) < MIN_LENGTH:
            raise ConfigError(f"{ENV} must be at least {MIN_LENGTH} characters")
        return password, f"seed password: from {ENV}"
    if path is None:
        if not is_loopback(host):
            raise ConfigError(
                f"refusing to serve on {host} with a generated seed password: set {ENV} "
                f"(or {FILE_ENV}, a file to keep a generated one in)"
            )
        path = default_file()
    try:
        return _read(path), f"seed password: from {path}"
    except FileNotFoundError:
        pass
    try:
        password = _create(path)
    except FileExistsError:  # another process created it meanwhile
        return _read(path), f"seed password: from {path}"
    return password, f"seed password (generated, shown once; kept in {path}, mode 0600): {password}"


def seed_password_for_client() -> str | None:
    """What a load generator logs in with: the variable, else the file (named, or the default); None
    if neither exists. Never creates anything."""
    password, path = _configured()
    if password is not None:
        return password
    try:
        return _read(path or default_file())
    except FileNotFoundError:
        return None
