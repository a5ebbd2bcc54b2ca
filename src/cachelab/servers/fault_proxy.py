"""A TCP fault proxy: put it between a client and any Redis to add latency, hang or reset.

Killing or pausing a process is only allowed for servers the suite launched.
A server named by ``REDIS_URL`` is faulted from the outside instead: point
the client at this proxy, and the proxy can

* add latency (``set_latency(rtt)``: half the round trip on each direction,
  order and pipelining preserved, so a 5 ms RTT models a cross-zone Redis);
* hang (``hang()``: bytes stop flowing both ways, connections stay open, as
  with a stalled server or a black-holed network);
* reset connections (``reset()``: every open connection is aborted with RST);
* refuse (``refuse()``: new connections are closed at once, as with a port
  nobody listens on).

:meth:`FaultProxy.fault` applies one for a bounded time and always undoes it,
even when the block raises. The proxy runs its own event loop in a daemon
thread, so synchronous experiments, Locust and tests can all drive it. It only
ever listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from cachelab.servers.redis_server import HOST, free_port

_CHUNK = 65536


@dataclass
class ProxyStats:
    connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    resets: int = 0
    refused: int = 0


class FaultProxy:
    """Forward 127.0.0.1:``port`` to ``target_host:target_port``, with injectable faults."""

    def __init__(self, target_host: str, target_port: int, *, port: int | None = None) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = port or free_port()
        self.stats = ProxyStats()
        self._latency = 0.0  # one-way seconds
        self._refusing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        # One task per proxied connection; closing cancels and awaits them, so none is left
        # pending when the loop closes ("Task was destroyed but it is pending!").
        self._handlers: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()

    @classmethod
    def for_url(cls, redis_url: str, *, port: int | None = None) -> FaultProxy:
        parsed = urllib.parse.urlparse(redis_url)
        return cls(parsed.hostname or HOST, parsed.port or 6379, port=port)

    def url_for(self, redis_url: str) -> str:
        """``redis_url`` rewritten to go through this proxy (credentials and db kept)."""
        parsed = urllib.parse.urlparse(redis_url)
        auth = parsed.netloc.rsplit("@", 1)[0] + "@" if "@" in parsed.netloc else ""
        return parsed._replace(netloc=f"{auth}{HOST}:{self.port}").geturl()

    # -- lifecycle -------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("fault proxy did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, HOST, self.port))
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            # Anything still running (a stop() that timed out) is cancelled and awaited, as
            # asyncio.run() does, before the loop closes.
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._loop = None

    async def _shutdown(self) -> None:
        assert self._server is not None and self._flowing is not None
        self._server.close()
        self._flowing.set()
        for writer in list(self._writers):
            writer.transport.abort()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await self._server.wait_closed()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro_fn) -> None:  # type: ignore[no-untyped-def]
        if self._loop is None:
            raise RuntimeError("proxy not started")
        asyncio.run_coroutine_threadsafe(coro_fn(), self._loop).result(timeout=5)

    # -- faults ----------------------------------------------------------
    def set_latency(self, rtt: float) -> None:
        """Add ``rtt`` seconds of round-trip latency (half each way) to every byte from now on."""
        self._latency = max(0.0, rtt) / 2

    def hang(self) -> None:
        async def stop_flow() -> None:
            assert self._flowing is not None
            self._flowing.clear()

        self._call(stop_flow)

    def unhang(self) -> None:
        async def start_flow() -> None:
            assert self._flowing is not None
            self._flowing.set()

        self._call(start_flow)

    def reset(self) -> int:
        """Abort every open connection with a TCP RST; returns how many."""
        count = len(self._writers)

        async def abort_all() -> None:
            for writer in list(self._writers):
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            self.stats.resets += count

        self._call(abort_all)
        return count

    def refuse(self, on: bool = True) -> None:
        self._refusing = on

    def heal(self) -> None:
        """Undo every fault."""
        self._latency = 0.0
        self._refusing = False
        if self._loop is not None:
            self.unhang()

    @contextlib.contextmanager
    def fault(self, kind: str, *, rtt: float = 0.0) -> Iterator[None]:
        """Apply ``kind`` (latency, hang, reset, refuse) for the duration of the block, then heal."""
        if kind == "latency":
            self.set_latency(rtt)
        elif kind == "hang":
            self.hang()
        elif kind == "reset":
            self.refuse(True)
            self.reset()
        elif kind == "refuse":
            self.refuse(True)
        else:
            raise ValueError(f"unknown proxy fault {kind!r}")
        try:
            yield
        finally:
            self.heal()

    # -- forwarding ------------------------------------------------------
    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._forward(client_reader, client_writer)
        except asyncio.CancelledError:
            # Cancelled by close: end normally. The task is asyncio's own per-connection task,
            # and on Python 3.11 its done-callback calls task.exception(), which raises (and
            # logs a traceback) for a cancelled task.
            pass
        finally:
            self._handlers.discard(task)

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        if self._refusing:
            self.stats.refused += 1
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            client_writer.transport.abort()
            return
        self.stats.connections += 1
        self._writers.update((client_writer, upstream_writer))
        try:
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer, up=True),
                self._pipe(upstream_reader, client_writer, up=False),
            )
        finally:
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        """Copy bytes, each delivered ``latency`` after it was read; pauses while hung."""
        assert self._flowing is not None
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._flowing.wait()  # type: ignore[union-attr]
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                queue.put_nowait((time.monotonic() + self._latency, data))
            queue.put_nowait((0.0, b""))
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            writer.transport.abort()
