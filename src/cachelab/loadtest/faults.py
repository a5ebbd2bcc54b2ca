"""Redis faults during a Locust run: ``--fault hang@30+10 --fault-proxy redis://…``.

Locust runs under gevent, so the fault proxy does not run inside it: the
master (or the local runner) starts ``cachelab chaos proxy --control-stdin``
as a child process when Locust starts, prints the proxy's address (point the
app's ``REDIS_URL`` at it), and at each fault's start and end — counted from
the test's start — writes ``slow``/``hang``/``reset``/``heal`` to its stdin.
The proxy heals everything and exits when Locust stops or dies (EOF), and
after a hard deadline in any case. Only proxy faults are possible here
(slow, hang, reset): Locust never kills or pauses a server.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import gevent

from cachelab.harness.faults import FaultSpec, parse_fault
from cachelab.servers.children import spawn

log = logging.getLogger("cachelab.loadtest")
PROXY_FAULTS = ("slow", "hang", "reset")


def parse_faults(texts: list[str]) -> list[FaultSpec]:
    specs = [parse_fault(t) for t in texts]
    bad = [s.kind for s in specs if s.kind not in PROXY_FAULTS]
    if bad:
        raise ValueError(
            f"--fault {bad}: a Locust run can only inject proxy faults ({', '.join(PROXY_FAULTS)})"
        )
    return specs


class ProxyController:
    """The fault proxy child process and the schedule that drives it."""

    def __init__(self, target: str, port: int | None, specs: list[FaultSpec], max_seconds: float) -> None:
        cmd = [
            sys.executable,
            "-m",
            "cachelab",
            "chaos",
            "proxy",
            "--target",
            target,
            "--control-stdin",
            "--duration",
            str(max_seconds),
        ]
        if port:
            cmd += ["--port", str(port)]
        self.specs = specs
        self.windows: list[dict[str, Any]] = []
        self.proc = spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.address = (self.proc.stdout.readline() if self.proc.stdout else "").strip()
        if not self.address.startswith("proxy:"):
            self.proc.kill()
            raise SystemExit(f"cachelab: the fault proxy did not start ({' '.join(cmd)})")
        log.warning("cachelab: %s — point the app's REDIS_URL at it", self.address)
        self._greenlets: list[gevent.Greenlet] = []

    def _send(self, command: str) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()

    def schedule(self) -> None:
        """Arm every fault relative to now (the test's start)."""
        for spec in self.specs:
            begin = f"slow {spec.rtt}" if spec.kind == "slow" else spec.kind
            window = {"kind": spec.kind, "start": spec.start, "end": spec.start + spec.duration}
            self.windows.append(window)
            self._greenlets.append(gevent.spawn_later(spec.start, self._send, begin))
            self._greenlets.append(gevent.spawn_later(spec.start + spec.duration, self._send, "heal"))

    def stop(self) -> None:
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        self._send("heal")
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # EOF: the proxy heals and exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
