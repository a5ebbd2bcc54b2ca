"""Trusted sessions: a session this process read from Redis moments ago is taken as still valid.

The seed's version
------------------
``getSession`` reads the session on every request: a round trip before the
request does anything, for an answer that changes once per login and log-out.

The flaw, and the fix
---------------------
A session cannot be cached like data: a log-out or a revocation must end it,
and a session cached for minutes would survive both. :class:`TrustedSessions`
keeps each session this process read for ``seconds`` (default 1 s) after the
read, so a busy client costs one session read per second instead of one per
request, and:

* **A log-out or revocation elsewhere takes effect within ``seconds``** (the
  entry expires and the next request reads Redis, which refuses the id). In this
  process it takes effect at once: the app's log-out and login (rotation) call
  :meth:`forget` before they answer (:meth:`forget_user` is for a log-out
  everywhere).
* **The idle timeout still slides**: a client busy enough to be trusted is read
  from Redis (which slides the timeout, ``session_get.lua``) once per ``seconds``.
* **Never past the absolute deadline**: an entry is trusted until the earlier of
  ``seconds`` after the read and the session's absolute deadline as that read
  reported it.

Bounded by ``max_sessions`` (least recently read dropped first). Not thread-safe:
one per event loop.

Round trips: :meth:`get` 0; a session not trusted is read as before (1, usually
batched with the rate-limit checks).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from cachelab.patterns.sessions import Session


class TrustedSessions:
    """Sessions read from Redis in the last ``seconds``, by id."""

    def __init__(
        self, seconds: float = 1.0, *, max_sessions: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not 0 < seconds <= 60:
            raise ValueError(f"seconds must be in (0, 60], got {seconds!r}")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions!r}")
        self.seconds = float(seconds)
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, tuple[Session, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> Session | None:
        """The session if it was read from Redis recently enough to be trusted, else None."""
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        session, until = entry
        if self._clock() >= until:
            del self._sessions[session_id]
            return None
        return session

    def remember(self, session: Session) -> None:
        """``session`` was just read from Redis (and found alive)."""
        seconds = self.seconds
        if session.absolute_expires_at:
            seconds = min(seconds, max(0.0, session.absolute_expires_at - session.last_seen))
        sessions = self._sessions
        sessions.pop(session.id, None)
        sessions[session.id] = (session, self._clock() + seconds)
        while len(sessions) > self.max_sessions:
            sessions.popitem(last=False)

    def forget(self, session_id: str) -> None:
        """The session ended in this process (log-out, rotation)."""
        self._sessions.pop(session_id, None)

    def forget_user(self, user_id: str) -> None:
        """Every session of ``user_id`` ended (log-out everywhere). O(trusted sessions): rare."""
        for session_id in [sid for sid, (s, _) in self._sessions.items() if s.user_id == user_id]:
            del self._sessions[session_id]
