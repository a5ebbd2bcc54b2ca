"""Fault injection: one vocabulary for every outage kind, always undone.

=============== ======================================== =====================
kind            what happens                             needs
=============== ======================================== =====================
``kill``        SIGKILL, restarted when the fault ends   a launched server
``pause``       SIGSTOP / SIGCONT: hung, sockets open    a launched server
``client-pause``  ``CLIENT PAUSE``: commands wait          a launched server
``slow``        the proxy adds ``rtt`` of latency        a :class:`FaultProxy`
``hang``        the proxy stops forwarding bytes         a :class:`FaultProxy`
``reset``       the proxy RSTs connections, refuses new  a :class:`FaultProxy`
``flap``        repeated short kills (or proxy refusals) either
=============== ======================================== =====================

Process faults act only on a :class:`RedisServer` this process launched; a
``REDIS_URL`` server is faulted only through the proxy in front of it. Every
fault is a context manager whose exit undoes it, and
:func:`~cachelab.harness.faults.FaultSchedule` runs one in a background thread
for a bounded window. :func:`parse_fault` reads the command-line form,
``kind@start+duration[:rtt=seconds]`` (``cachelab chaos``, the Locust plugin).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

from cachelab.servers.fault_proxy import FaultProxy
from cachelab.servers.redis_server import RedisServer

KINDS = ("kill", "pause", "client-pause", "slow", "hang", "reset", "flap")


class FaultNotAllowed(RuntimeError):
    """The fault needs a server we launched (or a proxy) and none was given."""


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    start: float  # seconds after the experiment starts
    duration: float
    rtt: float = 0.05  # for "slow"
    flap_period: float = 1.0  # for "flap": down half of each period

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.duration <= 0 or self.start < 0:
            raise ValueError("fault start must be >= 0 and duration > 0")


def _require_server(server: RedisServer | None, kind: str) -> RedisServer:
    if server is None:
        raise FaultNotAllowed(
            f"fault {kind!r} kills or pauses a process: only servers cachelab launched can take it; "
            "use a FaultProxy fault (slow, hang, reset) for a REDIS_URL server"
        )
    return server


def _require_proxy(proxy: FaultProxy | None, kind: str) -> FaultProxy:
    if proxy is None:
        raise FaultNotAllowed(f"fault {kind!r} needs a FaultProxy between the clients and Redis")
    return proxy


@contextlib.contextmanager
def inject(
    spec: FaultSpec,
    *,
    server: RedisServer | None = None,
    proxy: FaultProxy | None = None,
    stop: threading.Event | None = None,
) -> Iterator[None]:
    """Hold the fault for the duration of the block; undo it on exit, whatever happens."""
    kind = spec.kind
    if kind == "kill":
        srv = _require_server(server, kind)
        srv.kill()
        try:
            yield
        finally:
            if not srv.running:
                srv.start()
    elif kind == "pause":
        srv = _require_server(server, kind)
        srv.pause()
        try:
            yield
        finally:
            srv.resume()
    elif kind == "client-pause":
        srv = _require_server(server, kind)
        admin = srv.client(socket_timeout=2)
        # The pause expires on the server by itself after the fault's duration, so it is undone
        # even if this process dies; UNPAUSE below only ends it early (it may itself wait).
        admin.execute_command("CLIENT", "PAUSE", max(1, int(spec.duration * 1000)), "ALL")
        try:
            yield
        finally:
            with contextlib.suppress(redis.RedisError):
                admin.execute_command("CLIENT", "UNPAUSE")  # 6.2+
            admin.close()
    elif kind in ("slow", "hang", "reset"):
        with _require_proxy(proxy, kind).fault("latency" if kind == "slow" else kind, rtt=spec.rtt):
            yield
    elif kind == "flap":
        stop = stop or threading.Event()
        flapper = threading.Thread(target=_flap, args=(spec, server, proxy, stop), daemon=True)
        flapper.start()
        try:
            yield
        finally:
            stop.set()
            flapper.join(timeout=spec.flap_period * 2 + 10)


def _flap(
    spec: FaultSpec, server: RedisServer | None, proxy: FaultProxy | None, stop: threading.Event
) -> None:
    down = FaultSpec("kill" if server is not None else "reset", 0, spec.flap_period / 2)
    while not stop.is_set():
        with inject(down, server=server, proxy=proxy):
            stop.wait(spec.flap_period / 2)
        stop.wait(spec.flap_period / 2)


@dataclass
class FaultSchedule:
    """Run a fault from ``spec.start`` to ``spec.start + spec.duration`` after :meth:`begin`.

    The fault runs in a daemon thread; :meth:`end` (or leaving the ``with``
    block) stops it early and always undoes it.
    """

    spec: FaultSpec
    server: RedisServer | None = None
    proxy: FaultProxy | None = None
    started_at: float | None = None
    fault_began: float | None = None
    fault_ended: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def begin(self) -> FaultSchedule:
        # Validate before the clock starts, so a disallowed fault fails at once.
        if self.spec.kind in ("kill", "pause", "client-pause"):
            _require_server(self.server, self.spec.kind)
        if self.spec.kind in ("slow", "hang", "reset"):
            _require_proxy(self.proxy, self.spec.kind)
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"fault-{self.spec.kind}")
        self._thread.start()
        return self

    def _run(self) -> None:
        if self._stop.wait(self.spec.start):
            return
        self.fault_began = time.monotonic()
        with inject(self.spec, server=self.server, proxy=self.proxy, stop=self._stop):
            self._stop.wait(self.spec.duration)
        self.fault_ended = time.monotonic()

    def end(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> FaultSchedule:
        return self.begin()

    def __exit__(self, *exc: object) -> None:
        self.end()


_FAULT_RE = re.compile(
    r"^(?P<kind>[a-z\-]+)@(?P<start>[\d.]+)\+(?P<duration>[\d.]+)(?::rtt=(?P<rtt>[\d.]+))?$"
)


def parse_fault(text: str) -> FaultSpec:
    """``kind@start+duration[:rtt=seconds]``, e.g. ``hang@10+5`` or ``slow@0+30:rtt=0.02``."""
    match = _FAULT_RE.match(text.strip())
    if not match:
        raise ValueError(
            f"bad fault {text!r}: expected kind@start+duration[:rtt=s], kinds: {', '.join(KINDS)}"
        )
    return FaultSpec(
        match["kind"], float(match["start"]), float(match["duration"]), rtt=float(match["rtt"] or 0.05)
    )
