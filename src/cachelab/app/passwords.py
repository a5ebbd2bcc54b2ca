"""Password hashing for the sample app: Argon2id (argon2-cffi), verified off the event loop.

Why these choices:

* **argon2-cffi's** ``PasswordHasher``: a maintained binding of the reference
  Argon2 implementation; the hash string carries its own salt and parameters,
  so parameters can change later without a migration (``needs_rehash``).
* **Cost**: ``time_cost=3, memory_cost=19 MiB, parallelism=1`` (OWASP's
  minimum memory with one more pass) — about 30 ms per verify on the 2-core
  machine this was tuned on. Slow enough that a stolen hash costs an attacker
  real work per guess; fast enough that a login storm of a load test is not
  all hashing.
* **Off the loop, bounded**: a verify is CPU work that releases the GIL, so it
  runs in a thread; a semaphore caps concurrent verifies per process (each
  holds 19 MiB), so a burst of logins queues instead of exhausting memory.
* **Unknown e-mail**: verified against a dummy hash made at start-up with the
  same parameters, so it costs the same time and yields the same 401 as a
  wrong password — the response does not tell which e-mails exist.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TIME_COST = 3
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1
MAX_CONCURRENT_VERIFIES = 2

_hasher = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM)


def hash_password(password: str) -> str:
    """An Argon2id hash string (salt and parameters included)."""
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Does ``password`` match ``stored_hash``? False for a mismatch or an unreadable hash."""
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class PasswordChecker:
    """Verifies login attempts in a thread, at most ``limit`` at a time, with the dummy-hash rule."""

    def __init__(self, limit: int = MAX_CONCURRENT_VERIFIES) -> None:
        self._gate = asyncio.Semaphore(limit)
        self._dummy = hash_password(secrets.token_urlsafe(32))

    async def check(self, stored_hash: str | None, password: str | None) -> bool:
        """True only for a stored hash and a matching password; every call costs one verify."""
        candidate = password if password is not None else ""
        async with self._gate:
            ok = await asyncio.to_thread(verify_password, stored_hash or self._dummy, candidate)
        return ok and stored_hash is not None and password is not None
